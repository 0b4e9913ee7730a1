"Select-MoE Stages 1 and 2 through `moe-nb run`: warmup, router data, their chaining and their bad input."
import json, shutil
from pathlib import Path
import pytest
from test_cli import moe_nb, only_run

def metrics(rd: Path) -> dict: return json.loads((rd/"metrics.json").read_text())

@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    runs = tmp_path_factory.mktemp("sm")/"runs"
    r = moe_nb("run", "select_moe_warmup", "--preset", "smoke", "--runs-dir", runs, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    return runs, only_run(runs, "select_moe_warmup")

def test_warmup(stage1):
    runs, wr = stage1
    m = metrics(wr)
    assert m["status"] == "completed" and m["subset"] == 100 and m["n_samples"] == 400
    assert m["trainable_params"] == 2 * (64 + 8 * 64)  # quality gates and routers of the tiny OLMoE
    info = json.loads((wr/"router"/"router.json").read_text())
    assert info["mode"] == "full_rank" and info["base_model"] == "tiny-olmoe" and info["config"]["quality_loss_weight"] == 0.01
    assert (wr/"router"/"router_weights.safetensors").exists() and (wr/"warmup.png").exists()
    assert len(json.loads((wr/"subset_ids.json").read_text())["ids"]) == 100
    assert "training 1,152 of" in (wr/"run.log").read_text()

def test_router_data(stage1):
    from moe_nb.select_moe.router_data import load_router_data
    runs, wr = stage1
    r = moe_nb("run", "select_moe_router_data", "--preset", "smoke", "--runs-dir", runs, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    rd = only_run(runs, "select_moe_router_data")
    m = metrics(rd)
    assert m["status"] == "completed" and m["warmup_run"] == str(wr.resolve()) and m["n_samples"] == 400
    for k in ("auc_good_ratio", "auc_good_ratio_assistant", "auc_neg_nll", "auc_good_ratio_wrong"): assert 0 <= m[k] <= 1
    assert (rd/"quality_auc.png").read_bytes()[:4] == b"\x89PNG"
    data = load_router_data(rd/"router_data")
    assert sum(len(v["ids"]) for v in data.values()) == 400 and len(data) == 5  # the five embedded sources
    assert next(iter(data.values()))["moe_logits"].shape[1:] == (2, 8)

def test_lora_warmup_custom_trash_and_explicit_router(tmp_path):
    "LoRA warmup with a custom trash expert named as module:callable; the next stage reads the router, gates and trash expert."
    (tmp_path/"my_trash.py").write_text("def half(x):\n    return 0.5 * x\n")
    env = {"PYTHONPATH": str(tmp_path)}
    runs = tmp_path/"runs"
    r = moe_nb("run", "select_moe_warmup", "--preset", "smoke", "-p", "peft_mode", "lora", "-p", "lr", "1e-3", "-p", "trash_expert_mode", "custom",
               "-p", "trash_expert", "my_trash:half", "--runs-dir", runs, "--quiet", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    wr = only_run(runs, "select_moe_warmup")
    assert (wr/"router"/"adapter"/"adapter_config.json").exists() and metrics(wr)["trainable_params"] > 1152
    info = json.loads((wr/"router"/"router.json").read_text())
    assert info["version"] == 2 and info["config"]["trash_expert_custom"] == "my_trash:half" and (wr/"router"/"router_weights.safetensors").exists()
    r = moe_nb("run", "select_moe_router_data", "-p", "warmup", wr, "--runs-dir", tmp_path/"other", "--quiet", env=env)
    assert r.returncode == 0, r.stdout + r.stderr

@pytest.mark.parametrize("args, msg", [
    (["-p", "model", "tiny-qwen2-random"], "model='tiny-qwen2-random' is a 'qwen2' checkpoint; this pipeline needs 'olmoe'"),
    (["-p", "data", "/no/such/file.jsonl"], "/no/such/file.jsonl"),
])
def test_warmup_bad_input(tmp_path, args, msg):
    r = moe_nb("run", "select_moe_warmup", "--preset", "smoke", *args, "--runs-dir", tmp_path/"runs", "--quiet")
    assert r.returncode == 1 and msg in r.stdout, r.stdout + r.stderr
    assert not (only_run(tmp_path/"runs", "select_moe_warmup")/"router").exists()

@pytest.mark.parametrize("value", ["0", "1.5"])
def test_warmup_out_of_range_refused_before_running(tmp_path, value):
    r = moe_nb("run", "select_moe_warmup", "--preset", "smoke", "-p", "subset_ratio", value, "--runs-dir", tmp_path/"runs", "--quiet")
    assert r.returncode == 2 and f"subset_ratio={float(value)}: expected a value in (0, 1]" in r.stderr, r.stderr
    assert not (tmp_path/"runs").exists()

def test_router_data_bad_input(stage1, tmp_path):
    r = moe_nb("run", "select_moe_router_data", "--runs-dir", tmp_path/"runs", "--quiet")
    assert r.returncode == 1 and "'latest': no finished select_moe_warmup run with router/router.json" in r.stdout
    broken = tmp_path/"warm"
    shutil.copytree(stage1[1], broken)
    (broken/"router"/"router_weights.safetensors").unlink()
    r = moe_nb("run", "select_moe_router_data", "-p", "warmup", broken, "--runs-dir", tmp_path/"runs2", "--quiet")
    assert r.returncode == 1 and "router_weights.safetensors: missing router weights" in r.stdout, r.stdout
    assert not (only_run(tmp_path/"runs2", "select_moe_router_data")/"router_data").exists()

def test_selection(stage1):
    runs, wr = stage1
    if not (runs/"select_moe_router_data").exists():
        assert moe_nb("run", "select_moe_router_data", "--preset", "smoke", "--runs-dir", runs, "--quiet").returncode == 0
    r = moe_nb("run", "select_moe_selection", "--preset", "smoke", "--runs-dir", runs, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    sr = only_run(runs, "select_moe_selection")
    m = metrics(sr)
    assert m["status"] == "completed" and m["n_samples"] == 400 and m["n_selected"] == 20 and 4 <= m["k"] <= 12
    for k in ("precision_round_robin", "precision_quality", "precision_random"): assert 0 <= m[k] <= 1
    assert abs(m["clean_share_all"] - 0.7) < 1e-9
    lines = [json.loads(l) for l in (sr/"selected_data.jsonl").read_text().splitlines()]
    assert len(lines) == 20 and {"id", "dataset", "messages", "quality", "cluster"} <= set(lines[0])
    for meth in ("round_robin", "quality", "random"): assert len((sr/"selected"/f"{meth}.jsonl").read_text().splitlines()) == 20
    rep = json.loads((sr/"selection_report.json").read_text())
    assert [l["id"] for l in lines] == rep["selected_ids"]["round_robin"]
    # the same parameters give the same selection
    again = moe_nb("run", "select_moe_selection", "--preset", "smoke", "--runs-dir", runs, "--quiet")
    assert again.returncode == 0
    sr2 = max((runs/"select_moe_selection").iterdir())
    assert (sr2/"selected_data.jsonl").read_text() == (sr/"selected_data.jsonl").read_text()
    # the batch selection over this runs directory's router data selects what the selection pipeline selected
    r = moe_nb("run", "select_moe_batch_selection", "--preset", "smoke", "--runs-dir", runs, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    br = only_run(runs, "select_moe_batch_selection")
    rows = [json.loads(l) for l in (br/"selections"/"summary.jsonl").read_text().splitlines()]
    rd = only_run(runs, "select_moe_router_data")
    assert [x["router_data"] for x in rows] == [f"{rd.name}/router_data"] and rows[0]["n_selected"] == 20
    assert (br/"selections"/rd.name/"router_data"/"selected_data.jsonl").read_text() == (sr/"selected_data.jsonl").read_text()
    assert metrics(br)["n_dirs"] == 1 and (br/"batch_selection.png").exists()
    assert "[selection] cluster sizes:" in (br/"select_moe_batch_selection.ipynb").read_text()  # debug_print's lines

def test_warmup_two_processes_equal_one(tmp_path):
    "Stage 1 in 2 processes (gloo) trains the router that 1 process accumulating the same micro-batches trains; the debug terms are logged."
    import torch
    from moe_nb.cli import find_notebook, notebook_params
    from moe_nb.core import load_tensors
    from moe_nb.select_moe.pipelines import SelectMoeWarmupParams
    spec = {k: v["default"] for k, v in notebook_params(find_notebook("select_moe_warmup")).items()}
    # sample-averaged losses: a process's mean over its samples, averaged over processes, is the mean over all of them
    p = SelectMoeWarmupParams.from_notebook(spec).replace(n_embedded=200, subset_ratio=0.32, epochs=1.0, device="cpu", tracker="none",
                                                          lm_loss_average="sample", quality_loss_average="sample", quality_loss_debug=True)
    one = p.replace(grad_accum=2).run(tmp_path/"one")
    two = p.replace(num_processes=2).run(tmp_path/"two")
    assert (one["steps"], two["steps"], two["world_size"]) == (4, 4, 2) and len(two["history"]) == 4
    w1, w2 = (load_tensors(tmp_path/d/"router"/"router_weights.safetensors") for d in ("one", "two"))
    assert w1.keys() == w2.keys() and len(w1) == 4  # the gate and the router of 2 layers
    for k in w1: torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=2e-6)
    for h1, h2 in zip(one["history"], two["history"]):
        assert abs(h1["loss"] - h2["loss"]) < 1e-5 and abs(h1["quality_loss/layer1"] - h2["quality_loss/layer1"]) < 1e-6
    assert {"good_below_half", "good_std/layer0", "quality_score_std", "quality_loss_weighted"} <= set(two["history"][0])

@pytest.mark.parametrize("args, msg", [
    (["-p", "k_min", "1"], "k must be at least 2"),
    (["-p", "router_data", "/no/such/run"], "/no/such/run: not a select_moe_router_data run directory"),
])
def test_selection_bad_input(stage1, tmp_path, args, msg):
    runs, wr = stage1
    if not (runs/"select_moe_router_data").exists():
        assert moe_nb("run", "select_moe_router_data", "--preset", "smoke", "--runs-dir", runs, "--quiet").returncode == 0
    rd = only_run(runs, "select_moe_router_data")
    base = ["-p", "router_data", rd] if "router_data" not in args else []
    r = moe_nb("run", "select_moe_selection", *base, *args, "--runs-dir", tmp_path/"runs", "--quiet")
    assert r.returncode == 1 and msg in r.stdout, r.stdout
    assert not (only_run(tmp_path/"runs", "select_moe_selection")/"selected_data.jsonl").exists()

def test_warmup_empty_dataset(tmp_path):
    empty = tmp_path/"empty.jsonl"; empty.write_text("")
    r = moe_nb("run", "select_moe_warmup", "-p", "data", empty, "--runs-dir", tmp_path/"runs", "--quiet")
    assert r.returncode == 1 and f"data='{empty}': the dataset is empty" in r.stdout, r.stdout

def test_selection_out_of_range_refused_before_running(tmp_path):
    r = moe_nb("run", "select_moe_selection", "-p", "selection_percentage", "0", "--runs-dir", tmp_path/"runs", "--quiet")
    assert r.returncode == 2 and "selection_percentage=0.0: expected a value in (0, 1]" in r.stderr and not (tmp_path/"runs").exists(), r.stderr

def test_gate_diagnosis(tmp_path):
    "The faithful gate's diagnosis end to end: two warmup variants with their probes, the correlations, the score comparison."
    runs = tmp_path/"runs"
    r = moe_nb("run", "select_moe_gate_diagnosis", "--preset", "tiny", "--runs-dir", runs, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    rd = only_run(runs, "select_moe_gate_diagnosis"); m = metrics(rd)
    rows = [json.loads(l) for l in (rd/"variants.jsonl").read_text().splitlines()]
    assert [x["name"] for x in rows] == ["seed settings", "gates only, per-sample regulariser"] and m["best_variant"] in {x["name"] for x in rows}
    assert all(0 <= x[k] <= 1 for x in rows for k in ("auc", "auc_wrong", "auc_boilerplate", "probe_auc"))
    warm = sorted((rd/"runs"/"select_moe_warmup").glob("*/"))
    for w in warm:  # every warmup probed before its first step, every 4 steps and at its last
        steps, probe = metrics(w)["steps"], [json.loads(l) for l in (w/"gate_probe.jsonl").read_text().splitlines()]
        assert [x["step"] for x in probe] == sorted({0, *range(4, steps + 1, 4), steps}) and all(x["q05"] <= x["q50"] <= x["q95"] for x in probe)
        assert probe[0]["gate_change"] == 0 < probe[-1]["gate_change"]
    cor = [json.loads(l) for l in (rd/"correlates.jsonl").read_text().splitlines()]
    assert {x["kind"] for x in cor} == {"all", "none", "wrong", "shuffled", "truncated", "boilerplate"} and len(cor) == 6 * 4
    assert all(-1 <= x["spearman"] <= 1 for x in cor) and m["strongest_correlate"] in {x["variable"] for x in cor}
    scores = {x["score"]: x for x in map(json.loads, (rd/"scores.jsonl").read_text().splitlines())}
    assert len(scores) == 7 and 0 <= scores["D2, lambda per token"]["precision"] <= 1
    # the good ratio's AUC two ways: the router-data pipeline's, and the comparison's own from the saved router data
    assert abs(scores["good ratio (faithful)"]["auc"] - m["auc_gates_only_per_sample_regulariser"]) < 1e-9
    for f in ("variants.png", "probe.png", "correlates.png"): assert (rd/f).read_bytes()[:4] == b"\x89PNG"

def test_gate_diagnosis_bad_variant(tmp_path):
    r = moe_nb("run", "select_moe_gate_diagnosis", "--preset", "tiny", "-p", "d2_variant", "gates", "--runs-dir", tmp_path, "--quiet")
    assert r.returncode == 2 and "parameter 'd2_variant': 'gates' is not one of the variants" in r.stderr, r.stderr

def test_convert_and_compare_commands(tmp_path):
    "The seed's convert and compare scripts as commands: convert in one process, compare in another, read back in this one."
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM
    from moe_nb.select_moe.model import convert_olmoe_to_select_moe
    out = tmp_path/"sm"
    r = moe_nb("select-moe", "convert", "tiny-olmoe", out, "--dtype", "bfloat16", "--set", "quality_gate_init_std", "0.05")
    assert r.returncode == 0 and f"converted tiny-olmoe to Select-MoE: {out}" in r.stdout, r.stdout + r.stderr
    r = moe_nb("select-moe", "compare", out, "--json", tmp_path/"rep.json")
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
    rep = json.loads((tmp_path/"rep.json").read_text())
    assert rep["changed"] == rep["missing"] == [] and rep["gates_only"] and rep["dtype"] == "bfloat16" and rep["source"] == "tiny-olmoe"
    back = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    ref = convert_olmoe_to_select_moe("tiny-olmoe", quality_gate_init_std=0.05).to(torch.bfloat16)
    assert back.config.quality_gate_init_std == 0.05 and back.dtype == torch.bfloat16
    sb, sr = back.state_dict(), ref.state_dict()
    assert sb.keys() == sr.keys() and all(torch.equal(sb[k], sr[k]) for k in sr)
    w = load_file(out/"model.safetensors")  # a weight changed after the conversion: the check fails and names it
    w["model.layers.0.self_attn.q_proj.weight"] = w["model.layers.0.self_attn.q_proj.weight"] * 2
    save_file(w, out/"model.safetensors", metadata={"format": "pt"})
    r = moe_nb("select-moe", "compare", out)
    assert r.returncode == 1 and "FAILED" in r.stdout and "model.layers.0.self_attn.q_proj.weight" in r.stdout, r.stdout
    r = moe_nb("select-moe", "convert", "tiny-qwen2", tmp_path/"q")
    assert r.returncode == 2 and "is a 'qwen2' checkpoint; this pipeline needs 'olmoe'" in r.stderr and not (tmp_path/"q").exists(), r.stderr
