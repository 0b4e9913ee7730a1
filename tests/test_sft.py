"Select-MoE Stages 3 and 4 and the selection experiment through `moe-nb run`; 2-process LoRA fine-tuning; bad input."
import json
from pathlib import Path
import pytest
import torch
from test_cli import moe_nb, only_run

def metrics(rd: Path) -> dict: return json.loads((rd/"metrics.json").read_text())
def yaml_params(rd: Path) -> dict:
    import yaml
    return yaml.safe_load((rd/"params.yaml").read_text())

def clean_records(n):
    from moe_nb.embedded import embedded_instructions
    recs, labels = embedded_instructions(200, 0.3, seed=0)
    return [r for r, l in zip(recs, labels) if l["clean"]][:n]

def test_two_processes_equal_one(tmp_path):
    "Data parallel over 2 processes (gloo) gives the adapter of 1 process accumulating the same micro-batches."
    from moe_nb.core import save_jsonl, load_tensors
    from moe_nb.select_moe.finetune import launch_finetune
    data = save_jsonl(clean_records(32), tmp_path/"sel.jsonl")
    sft = {"epochs": 2.0, "lr": 3e-3, "max_len": 64, "lora_dropout": 0.0, "cpu": True, "save_every": 100}
    env = {"OMP_NUM_THREADS": "1"}
    launch_finetune({"base_model": "tiny-qwen2", "data": str(data), "run_dir": str(tmp_path/"one"), "sft": {**sft, "batch_size": 4, "grad_accum": 2}}, 1, env=env, timeout=600)
    launch_finetune({"base_model": "tiny-qwen2", "data": str(data), "run_dir": str(tmp_path/"two"), "sft": {**sft, "batch_size": 4}}, 2, env=env, timeout=600)
    one, two = (load_tensors(tmp_path/d/"adapter"/"adapter_model.safetensors") for d in ("one", "two"))
    assert one.keys() == two.keys() and len(one) == 16  # A and B of q, k, v, o in 2 layers
    for k in one: torch.testing.assert_close(two[k], one[k], rtol=0, atol=2e-5)
    info = json.loads((tmp_path/"two"/"adapter"/"adapter_info.json").read_text())
    assert info["world_size"] == 2 and info["steps"] == 8 and info["n_train"] == 32 and info["base_model"] == "tiny-qwen2"
    assert not any(torch.equal(v, torch.zeros_like(v)) for v in one.values())  # B moved off its zero init

def test_finetune_and_eval_bad_input(tmp_path):
    runs = tmp_path/"runs"
    bad = tmp_path/"bad.jsonl"
    bad.write_text(json.dumps(clean_records(1)[0]) + "\n" + '{"messages": [{"role": "user", "content": "hi"}]}\n')
    r = moe_nb("run", "select_moe_finetune", "--preset", "smoke", "-p", "data", bad, "--runs-dir", runs, "--quiet")
    assert r.returncode == 1 and f"{bad}:2: no assistant message" in r.stdout, r.stdout + r.stderr
    fr = only_run(runs, "select_moe_finetune")
    assert not (fr/"adapter").exists() and not (fr/"checkpoints").exists()  # nothing trained
    r = moe_nb("run", "select_moe_finetune", "--preset", "smoke", "--runs-dir", tmp_path/"empty", "--quiet")
    assert r.returncode == 1 and "no finished select_moe_selection run" in r.stdout, r.stdout

    # a good adapter, then evaluations that must fail before anything is evaluated
    good = tmp_path/"good.jsonl"
    good.write_text("".join(json.dumps(x) + "\n" for x in clean_records(16)))
    r = moe_nb("run", "select_moe_finetune", "--preset", "smoke", "-p", "data", good, "-p", "num_processes", "2", "--runs-dir", runs, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    ft = [d for d in (runs/"select_moe_finetune").iterdir() if (d/"adapter").exists()][0]
    m = metrics(ft)
    assert m["provenance"]["selection"] == "file" and m["provenance"]["n_records"] == 16 and m["trainable_params"] == 7168
    assert m["world_size"] == 2 and m["steps"] == 1  # 1 epoch of 16 samples at 8 per process
    for args, msg in [
        (["-p", "tasks", "[moe_nb_heldout, no_such_task]"], "lm-eval task(s) ['no_such_task'] are neither local (moe_nb_answers, moe_nb_heldout) nor installed"),
        (["-p", "base_model", "tiny-olmoe"], "was trained on a 'qwen2' model (tiny-qwen2); tiny-olmoe is a 'olmoe' model"),
        (["-p", "adapter", tmp_path], "not a select_moe_finetune run directory"),
    ]:
        if args[1] != "adapter": args = ["-p", "adapter", ft, *args]
        r = moe_nb("run", "select_moe_eval", "--preset", "smoke", *args, "--runs-dir", tmp_path/"ev", "--quiet")
        assert r.returncode == 1 and msg in r.stdout, (args, r.stdout + r.stderr)
    assert not list((tmp_path/"ev").glob("select_moe_eval/*/lm_eval_results.json"))

@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    runs = tmp_path_factory.mktemp("exp")/"runs"
    r = moe_nb("run", "select_moe_experiment", "--preset", "tiny", "--runs-dir", runs, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    return only_run(runs, "select_moe_experiment")

def test_experiment(experiment):
    m = metrics(experiment)
    assert m["status"] == "completed" and m["n_seeds"] == 2
    sub = experiment/"runs"
    n = {p: len(list((sub/p).glob("*/metrics.json"))) for p in ("select_moe_warmup", "select_moe_router_data", "select_moe_selection",
                                                                   "select_moe_finetune", "select_moe_eval", "select_moe_results")}
    # per seed: a faithful and a gates-only warmup (for quality:d2), each scored once; three selection runs (faithful,
    # d2, neg_ifd on the LM's hidden states per task); six arms
    assert n == {"select_moe_warmup": 4, "select_moe_router_data": 4, "select_moe_selection": 6,
                 "select_moe_finetune": 12, "select_moe_eval": 13, "select_moe_results": 1}
    arms = ("round_robin", "quality", "random", "all", "quality:d2", "round_robin:neg_ifd@lm_hidden/task")
    for arm in arms:
        assert 0 <= m[f"precision_{arm}"] <= 1 and 0 <= m[f"mc_acc_{arm}"] <= 1 and m[f"answer_nll_{arm}"] > 0
    for arm in ("quality:d2", "round_robin:neg_ifd@lm_hidden/task"):  # the AUC of the arm's score, per kind, and its cost
        assert all(0 <= m[f"auc_{arm}{k}"] <= 1 for k in ("", "_wrong", "_shuffled", "_truncated", "_boilerplate")) and m[f"cost_s_per_1k_{arm}"] > 0
        lo, hi = m[f"answer_nll_{arm}_minus_random_ci"]
        assert lo < m[f"answer_nll_{arm}_minus_random"] < hi
    gates = [metrics(d) for d in (sub/"select_moe_warmup").iterdir() if yaml_params(d)["train_routers"] is False]
    assert len(gates) == 2 and all(g["trainable_params"] == 2 * 64 for g in gates)  # the quality gates of 2 layers only
    assert m["precision_all"] == pytest.approx(0.7)  # the embedded data's clean share
    # what each selection covers: the "all" arm is the data's own mix; per task keeps it (10% of each dataset)
    assert m["domain_kl_all"] == 0 and m["domain_kl_round_robin:neg_ifd@lm_hidden/task"] == pytest.approx(0, abs=1e-9)
    assert all(m[f"domain_kl_{a}"] >= 0 for a in arms)
    table = [json.loads(l) for l in (experiment/"arms.jsonl").read_text().splitlines()]
    assert all(sum(v for k, v in r.items() if k.startswith("share_")) == pytest.approx(1) for r in table)
    # the fine-tuned arms all beat the base model on answer NLL; all the data beats 10% of it
    assert all(m[f"answer_nll_{a}"] < m["answer_nll_base"] for a in ("round_robin", "quality", "random", "all"))
    assert m["answer_nll_all"] < m["answer_nll_random"]
    assert isinstance(m["router_beats_random"], bool) and (experiment/"experiment.png").read_bytes()[:4] == b"\x89PNG"
    # every fine-tuning run trained on its arm's file; the results table has one row per eval run, task and metric
    for d in (sub/"select_moe_finetune").iterdir():
        p = metrics(d)["provenance"]
        assert p["arm"] in arms and p["n_records"] == (400 if p["arm"] == "all" else 40)
    res = only_run(sub, "select_moe_results")
    rows = [json.loads(l) for l in (res/"results.jsonl").read_text().splitlines()]
    assert len({r["run"] for r in rows}) == 13 and {r["metric"] for r in rows} == {"acc", "acc_norm", "perplexity", "nll"}
    assert (res/"results.png").exists() and (res/"results.md").read_text().startswith("| model | arm |")
    appended = [json.loads(l) for l in (sub/"select_moe_results.jsonl").read_text().splitlines()]
    assert len(appended) == 13 * 4  # every eval appended its rows: acc and acc_norm, perplexity and acc

def test_experiment_bad_input(tmp_path):
    r = moe_nb("run", "select_moe_experiment", "--preset", "tiny", "-p", "arms", "[round_robin, best]", "--runs-dir", tmp_path/"runs")
    assert r.returncode == 2 and "parameter 'arms[1]': arm 'best': method 'best'; expected one of" in r.stderr, r.stderr
    r = moe_nb("run", "select_moe_experiment", "--preset", "tiny", "-p", "tasks", "[not_a_task]", "--runs-dir", tmp_path/"runs", "--quiet")
    assert r.returncode == 1 and "lm-eval task(s) ['not_a_task'] are neither local" in r.stdout, r.stdout + r.stderr
    assert not list((tmp_path/"runs").glob("select_moe_experiment/*/runs"))  # nothing ran

def test_qwen3_target_preset(tmp_path):
    "The qwen3-1.7b preset's LoRA recipe on a tiny random Qwen3 checkpoint (the preset's model, shrunk): trains, saves, reloads."
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from moe_nb.embedded import get_tokenizer
    from moe_nb.select_moe.finetune import load_adapted
    from moe_nb.zoo import load_backbone
    tok = get_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, max_position_embeddings=256, tie_word_embeddings=True)
    ckpt = tmp_path/"tiny-qwen3"
    Qwen3ForCausalLM(cfg).save_pretrained(ckpt); tok.save_pretrained(ckpt)
    data = tmp_path/"sel.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in clean_records(16)))
    runs = tmp_path/"runs"
    r = moe_nb("run", "select_moe_finetune", "--preset", "qwen3-1.7b", "-p", "base_model", ckpt, "-p", "data", data, "-p", "device", "cpu",
               "-p", "dtype", "float32", "-p", "num_processes", "1", "-p", "epochs", "1.0", "-p", "grad_accum", "1", "-p", "max_len", "96",
               "-p", "precision", "no", "--runs-dir", runs, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    ft = only_run(runs, "select_moe_finetune")
    p, info = yaml_params(ft), json.loads((ft/"adapter"/"adapter_info.json").read_text())
    assert (p["lora_r"], p["lora_alpha"], p["lora_dropout"], p["lr"]) == (128, 256.0, 0.1, 2e-5)
    assert info["model_type"] == "qwen3" and info["steps"] == 8  # 16 samples at 2 per step
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    adapted = load_adapted(load_backbone(str(ckpt)), ft/"adapter", "tiny qwen3").eval()
    cfg_a = json.loads((ft/"adapter"/"adapter_config.json").read_text())
    assert sorted(cfg_a["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"] and cfg_a["r"] == 128
    with torch.no_grad():  # the adapter changed the model (B left its zero init), and only a little (lr 2e-5)
        diff = (adapted(input_ids=ids).logits - load_backbone(str(ckpt))(input_ids=ids).logits).abs().max().item()
    assert 0 < diff < 1, diff
