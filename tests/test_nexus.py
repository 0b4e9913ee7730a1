"End-to-end NEXUS runs through the CLI: online and offline distillation on the tiny GPT-OSS, and bad input."
import json, subprocess
import pytest
from safetensors import safe_open

def moe_nb(*args):
    return subprocess.run(["moe-nb", *map(str, args)], capture_output=True, text=True, timeout=900)

def only_run(runs):
    (rd,) = list((runs/"nexus").iterdir())
    return rd, json.loads((rd/"metrics.json").read_text())

def test_online(tmp_path):
    r = moe_nb("run", "nexus", "--preset", "smoke", "-p", "k", "4", "--runs-dir", tmp_path, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    rd, m = only_run(tmp_path)
    assert m["status"] == "completed"
    # distillation brings the converted model back towards the teacher
    assert m["kl_trained"] < 0.5 * m["kl_untrained"] and m["kl_untrained"] > 0
    assert m["ppl_trained"] < m["ppl_untrained"] and m["ppl_original"] > 1
    assert 0 < m["trainable_share"] < 0.05 and "router_drift" not in m
    choice = json.loads((rd/"expert_choice.json").read_text())
    assert choice["k"] == 4 and all(len(l["experts"]) == 4 for l in choice["layers"])
    with safe_open(str(rd/"router_stats.safetensors"), "pt") as f:
        assert f.metadata()["tokens"] == "4096" and f.get_tensor("probs.0").shape == (4096, 8)
    cfg = json.loads((rd/"model"/"config.json").read_text())
    assert cfg["model_type"] == "gpt_oss_nexus" and cfg["shared_expert_init"] == "pca_topK" and cfg["shared_expert_scale"] == 0.2
    assert isinstance(m["chat_reply"], str)
    for png in ("router_pca.png", "training.png", "validation.png"): assert (rd/png).read_bytes()[:4] == b"\x89PNG"
    # the validation stage on the saved model alone, in another process: the numbers the run reported for it
    r = moe_nb("run", "nexus_validate", "--preset", "smoke", "-p", "model", rd, "--runs-dir", tmp_path/"v", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    (vd,) = list((tmp_path/"v"/"nexus_validate").iterdir())
    v = json.loads((vd/"metrics.json").read_text())
    assert v["baseline"] == "tiny-gpt_oss" and v["chat_reply"] == m["chat_reply"]
    for a, b in (("ppl", "ppl_trained"), ("kl", "kl_trained"), ("ppl_baseline", "ppl_original")):
        assert abs(v[a] - m[b]) <= 1e-6 * max(1.0, abs(m[b])), (a, v[a], m[b])
    r = moe_nb("run", "nexus_validate", "--preset", "smoke", "-p", "model", rd/"model", "--runs-dir", tmp_path/"v2", "--quiet")
    assert r.returncode == 1 and "name the GPT-OSS to compare with (-p baseline ...)" in r.stdout, r.stdout

def test_offline_router_sfa(tmp_path):
    r = moe_nb("run", "nexus", "--preset", "smoke", "-p", "mode", "offline", "-p", "train_router", "true", "-p", "aux_weight", "0.01",
               "-p", "learnable_scale", "true", "-p", "sfa_every", "5", "--runs-dir", tmp_path, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    rd, m = only_run(tmp_path)
    man = json.loads((rd/"teacher"/"manifest.json").read_text())
    assert man["k"] == 64 and man["seq_len"] == 64 and sum(s["rows"] for s in man["shards"]) == man["n_samples"]
    assert m["kl_trained"] < m["kl_untrained"]
    assert len(m["router_drift"]) == 2 and all(0 < d < 2 for d in m["router_drift"])
    assert len(m["scale_learned"]) == 2 and all(s != 0.2 for s in m["scale_learned"])
    rows = [json.loads(l) for l in (rd/"metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["sfa_applied"] == 4 and "aux_loss" in rows[-1] and (rd/"sfa_anchor.safetensors").exists()

@pytest.mark.parametrize("param,value,message", [
    ("model", "tiny-olmoe-random", "this pipeline needs 'gpt_oss'"),
    ("k", "9", "k=9 is larger than the number of experts (8)"),
])
def test_bad_input(tmp_path, param, value, message):
    r = moe_nb("run", "nexus", "--preset", "smoke", "-p", param, value, "--runs-dir", tmp_path, "--quiet")
    assert r.returncode == 1 and message in r.stdout, r.stdout + r.stderr
    rd, m = only_run(tmp_path)
    assert m["status"] == "failed" and not (rd/"model").exists() and not (rd/"router_stats.safetensors").exists()

def test_bad_choice_refused_before_the_run(tmp_path):
    for args, msg in ((["-p", "init", "pca"], "parameter 'init': init='pca': unknown initialisation; expected pca_top<K> (e.g. the seed's pca_top24)"),
                      (["-p", "init", "pca_top4", "-p", "k", "2"], "init='pca_top4' says K=4 but k=2")):
        r = moe_nb("run", "nexus", "--preset", "smoke", *args, "--runs-dir", tmp_path)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
    assert not tmp_path.joinpath("nexus").exists()

def test_collection_in_two_processes_and_saved_stats(tmp_path):
    "The router statistics collected in 2 processes equal 1 process's (counts, tokens); a run's saved statistics replace the collection."
    import torch
    from moe_nb.cli import find_notebook, notebook_params
    from moe_nb.nexus.pipelines import NexusParams
    from moe_nb.zoo import load_backbone, tokenizer_for
    p = NexusParams.from_notebook({k: v["default"] for k, v in notebook_params(find_notebook("nexus")).items()}).replace(
        collect_tokens=3000, docs_per_domain=40, seq_len=64, device="cpu", collect_sampling="balanced")
    teacher, tok = load_backbone("tiny-gpt_oss").eval(), tokenizer_for("tiny-gpt_oss")
    one, _, r1 = p.expert_inputs(tmp_path/"one", teacher, tok)
    two, _, r2 = p.replace(collect_processes=2).expert_inputs(tmp_path/"two", teacher, tok)
    assert one.tokens == two.tokens == 3008 and r2["processes"] == 2 and r1["sources"] == r2["sources"]  # 47 whole blocks of 64
    assert torch.equal(one.counts, two.counts)
    torch.testing.assert_close(one.probs[1].float().mean(0), two.probs[1].float().mean(0), rtol=0, atol=1e-4)
    one.save(tmp_path/"one"/"router_stats.safetensors")
    r = moe_nb("run", "nexus", "--preset", "smoke", "-p", "pca_stats", tmp_path/"one", "-p", "init", "pca_top4", "-p", "steps", "4",
               "--runs-dir", tmp_path/"runs", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    rd, m = only_run(tmp_path/"runs")
    assert m["router_statistics"] == {"pca_stats": str(tmp_path/"one")} and m["collected_tokens"] == 3008 and m["k"] == 4

def test_checkpoint_by_path(tmp_path):
    "A GPT-OSS checkpoint directory (weights + tokenizer), as a real user brings one; the converted model reloads from its run."
    from moe_nb.zoo import load_backbone
    from moe_nb.embedded import get_tokenizer
    ck = tmp_path/"gpt-oss-ck"
    load_backbone("tiny-gpt_oss").save_pretrained(ck); get_tokenizer().save_pretrained(ck)
    r = moe_nb("run", "nexus", "--preset", "smoke", "-p", "model", ck, "-p", "init", "top1", "-p", "dtype", "float32",
               "--runs-dir", tmp_path/"runs", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    rd, m = only_run(tmp_path/"runs")
    assert m["kl_trained"] < m["kl_untrained"]
    import torch
    from transformers import AutoModelForCausalLM
    __import__("moe_nb.nexus.model")  # registers gpt_oss_nexus with the Auto classes (`import moe_nb...` would shadow the helper)
    back = AutoModelForCausalLM.from_pretrained(rd/"model", trust_remote_code=False)
    assert type(back).__name__ == "GptOssNexusForCausalLM" and back.config.shared_expert_init == "top1"
    with torch.no_grad(): assert torch.isfinite(back(input_ids=torch.tensor([[1, 2, 3]])).logits).all()

def test_offline_as_the_seed_runs_it(tmp_path):
    "The teacher's outputs by 2 processes, training in 2 processes without the teacher in memory, steps from the data (epochs)."
    r = moe_nb("run", "nexus", "--preset", "smoke", "-p", "mode", "offline", "-p", "precompute_processes", "2", "-p", "num_processes", "2",
               "-p", "epochs", "2.0", "-p", "batch_size", "4", "-p", "grad_accum", "2", "-p", "init", "pca_top4", "--runs-dir", tmp_path, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    rd, m = only_run(tmp_path)
    man = json.loads((rd/"teacher"/"manifest.json").read_text())
    assert man["world_size"] == 2 and sorted({s["file"][:9] for s in man["shards"]}) == ["part-r000", "part-r001"]
    n = man["n_samples"]
    rows = [json.loads(l) for l in (rd/"metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == -(-2 * n // (4 * 2 * 2))  # ceil(epochs N / (batch x accumulation x processes))
    assert (rd/"student"/"config.json").exists() and m["kl_trained"] < m["kl_untrained"] and m["k"] == 4
    assert "distill in 2 processes" not in r.stdout and (rd/"distill_job.json").exists() and (rd/"teacher"/"precompute_job.json").exists()

def test_deepseek_v3_router(tmp_path):
    "The router trains with bias balancing and a decaying auxiliary weight; the biases are saved, and a fresh process reproduces the run's numbers."
    from safetensors.torch import load_file
    r = moe_nb("run", "nexus", "--preset", "smoke", "-p", "train_router", "true", "-p", "router_bias_balancing", "true", "-p", "bias_update_speed", "0.05",
               "-p", "aux_weight", "0.01", "-p", "aux_schedule", "linear", "--runs-dir", tmp_path, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    rd, m = only_run(tmp_path)
    rows = [json.loads(l) for l in (rd/"metrics.jsonl").read_text().splitlines()]
    w = [x["aux_weight"] for x in rows]
    assert w == sorted(w, reverse=True) and w[0] <= 0.01 and w[-1] < 0.002  # the linear decay
    # balancing pulls the routing away from the teacher's (unbalanced) one: the drift is the point, KL is not asked to fall here
    assert m["max_violation_final"] >= 0 and len(m["router_drift"]) == 2 and all(d > 0 for d in m["router_drift"])
    cfg = json.loads((rd/"model"/"config.json").read_text())
    bias = {k: v for k, v in load_file(rd/"model"/"model.safetensors").items() if k.endswith("balance_bias")}
    assert cfg["router_balance_bias"] and len(bias) == 2 and all(v.abs().max() > 0 for v in bias.values())
    r = moe_nb("run", "nexus_validate", "--preset", "smoke", "-p", "model", rd, "--runs-dir", tmp_path/"v", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    (vd,) = list((tmp_path/"v"/"nexus_validate").iterdir())
    v = json.loads((vd/"metrics.json").read_text())
    assert abs(v["ppl"] - m["ppl_trained"]) <= 1e-6 * m["ppl_trained"] and abs(v["kl"] - m["kl_trained"]) <= 1e-6 * max(1, m["kl_trained"])

def test_domain_adaptation(tmp_path):
    """nexus_domain on its smoke preset: the four methods at one budget, each adapting to the domain, and an arm
    interrupted after its first checkpoint resumes to the same numbers (ESFT: the frozen experts restored after the load)."""
    from moe_nb.core import load_yaml
    from moe_nb.nexus.pipelines import NexusDomainParams
    r = moe_nb("run", "nexus_domain", "--preset", "smoke", "--runs-dir", tmp_path, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    (rd,) = list((tmp_path/"nexus_domain").iterdir())
    m, src = json.loads((rd/"metrics.json").read_text()), json.loads((rd/"source.json").read_text())
    rows = {json.loads(l)["arm"]: json.loads(l) for l in (rd/"runs.jsonl").read_text().splitlines()}
    assert m["status"] == "completed" and set(rows) == {"nexus", "lora", "esft", "full"}
    budget = rows["nexus"]["trainable_params"]
    assert rows["esft"]["trainable_params"] == budget and abs(rows["lora"]["trainable_params"] - budget) < 0.05 * budget
    assert rows["full"]["trainable_share"] == 1.0 and 0 < rows["nexus"]["trainable_share"] < 0.05
    for arm, row in rows.items():
        assert row["domain_ppl"] < src["domain_ppl"] and row["general_kl"] > 0, (arm, row, src)
        assert m[f"{arm}_domain_ppl_mean"] == row["domain_ppl"]
    for png in ("domain.png", "tradeoff.png", "frontier.png"): assert (rd/png).read_bytes()[:4] == b"\x89PNG"
    # a crash between the checkpoints at steps 3 and 6: the last checkpoint, the result and the later metrics gone
    arm = rd/"arms"/"esft-s0"
    before = json.loads((arm/"result.json").read_text())
    (arm/"result.json").unlink()
    import shutil; shutil.rmtree(arm/"checkpoints"/"step-0000006")
    lines = (arm/"metrics.jsonl").read_text().splitlines()
    (arm/"metrics.jsonl").write_text("".join(l + "\n" for l in lines if json.loads(l).get("step", 0) <= 3))
    p = NexusDomainParams.from_dict(load_yaml(rd/"params.yaml"))
    after = p.run_arm(rd, "esft", 0, p.domain_data(rd))
    for k in ("domain_nll", "general_nll", "general_kl"): assert abs(after[k] - before[k]) < 1e-6, (k, after[k], before[k])
    steps = [json.loads(l)["step"] for l in (arm/"metrics.jsonl").read_text().splitlines() if "step" in json.loads(l)]
    assert steps == sorted(set(steps)) and steps[-1] == 6 and "resumed from" in (arm/"run.log").read_text()
