"End-to-end ParScale runs through the CLI: the multi-P experiment (nested papermill runs + summary) and bad input."
import json, subprocess
import pytest

def moe_nb(*args):
    return subprocess.run(["moe-nb", *map(str, args)], capture_output=True, text=True, timeout=900)

def test_multi_p_tiny(tmp_path):
    runs = tmp_path/"runs"
    r = moe_nb("run", "parscale_multi", "--preset", "tiny", "--runs-dir", runs, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    (rd,) = list((runs/"parscale_multi").iterdir())
    m = json.loads((rd/"metrics.json").read_text())
    assert m["status"] == "completed"
    trains = sorted((rd/"runs"/"parscale_train").iterdir())
    assert len(trains) == 4
    tm = {t["P"]: t for t in (json.loads((d/"metrics.json").read_text()) for d in trains)}
    assert set(tm) == {1, 2, 4, 8} and all(t["status"] == "completed" for t in tm.values())
    # P=1 in PEFT mode is the untouched backbone; P>1 trains exactly the prefixes and the aggregator
    assert tm[1]["trainable_params"] == 0 and tm[1]["eval_loss"] == pytest.approx(tm[1]["backbone_eval_loss"], abs=1e-9)
    for P in (2, 4, 8):
        assert tm[P]["trainable_params"] == tm[P]["parscale_params"] > 0
        assert tm[P]["train_tokens"] == 20 * 8 * 64  # the same token budget for every P
        assert 0 < tm[P]["entropy_ratio"] <= 1 and len(tm[P]["mean_weight"]) == P
    # the summary: the paper's constants reproduced from its own data, and our fit with alpha fixed (one size)
    assert m["paper_pile_k"] == pytest.approx(0.3344, abs=2e-3) and m["paper_stack_v2_python_k"] == pytest.approx(0.3934, abs=2e-3)
    assert m["paper_pile_E"] == pytest.approx(1.2889, abs=2e-3) and m["paper_pile_alpha"] == pytest.approx(0.1964, abs=2e-3)
    assert m["eval_loss_P1"] == pytest.approx(tm[1]["eval_loss"]) and m["ours_alpha"] == 0.1964 and m["ours_fixed"] == ["alpha"]
    assert m["ours_r2"] <= 1 and m["ours_k"] >= 0  # 20-step runs: the losses need not fall with P, so R^2 may be < 0
    (sd,) = list((rd/"runs"/"parscale_summary").iterdir())
    assert (sd/"loss_vs_P.png").read_bytes()[:4] == b"\x89PNG" and (sd/"fit.png").exists()
    assert (trains[1]/"training.png").exists() or (trains[2]/"training.png").exists()

@pytest.mark.parametrize("param,value,message", [
    ("backbone", "tiny-olmoe-random", "this pipeline needs 'qwen2'"),
    ("prefix_init", "zeros", "prefix_init='zeros': expected 'kv' or 'normal'"),
])
def test_bad_input(tmp_path, param, value, message):
    r = moe_nb("run", "parscale_train", "--preset", "smoke", "-p", param, value, "--runs-dir", tmp_path/"runs", "--quiet")
    assert r.returncode == 1 and message in r.stdout, r.stdout + r.stderr
    (rd,) = list((tmp_path/"runs"/"parscale_train").iterdir())
    assert not (rd/"model").exists() and not (rd/"checkpoints").exists()

def test_zero_streams_refused_before_running(tmp_path):
    r = moe_nb("run", "parscale_train", "--preset", "smoke", "-p", "P", "0", "--runs-dir", tmp_path/"runs", "--quiet")
    assert r.returncode == 2 and "P=0: expected > 0" in r.stderr and not (tmp_path/"runs").exists(), r.stderr

def test_streamed_data_token_budget_memory(tmp_path):
    "A local Parquet dataset streamed (shards, rows and bytes logged), steps from a token budget with accumulation, memory in the log."
    import pyarrow as pa, pyarrow.parquet as pq
    from moe_nb.embedded import embedded_corpus
    data = tmp_path/"pile"; data.mkdir()
    docs = [t for d in embedded_corpus(150, seed=4).values() for t in d]
    for i in range(2): pq.write_table(pa.table({"text": docs[i::2]}), data/f"part-{i}.parquet", row_group_size=50)
    r = moe_nb("run", "parscale_train", "--preset", "seed", "-p", "n_tokens", "8", "-p", "P", "2", "-p", "seq_len", "64", "-p", "n_eval", "16",
               "-p", "data", data, "-p", "target_tokens", "6000", "-p", "grad_accum", "2", "-p", "batch_size", "4", "-p", "warmup_steps", "2",
               "--runs-dir", tmp_path/"runs", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    (rd,) = list((tmp_path/"runs"/"parscale_train").iterdir())
    m, prov = json.loads((rd/"metrics.json").read_text()), json.loads((rd/"data_provenance.json").read_text())
    steps = -(-6000 // (4 * 2 * 64))  # ceil(target_tokens / (batch x accumulation x seq_len)) = 12
    assert json.loads((rd/"metrics.jsonl").read_text().splitlines()[-1])["step"] == steps and m["train_tokens"] == steps * 4 * 2 * 64
    assert prov["train_blocks"] == steps * 8 and prov["held_out_blocks"] == 16 and prov["shards"][0]["shard"].endswith("part-0.parquet")
    assert all(0 < s["bytes"][0] < s["bytes"][1] <= (data/s["shard"].split("/")[-1]).stat().st_size for s in prov["shards"])
    import yaml
    assert m["data"] == str(data) and m["rss_mb_max"] > 50 and yaml.safe_load((rd/"params.yaml").read_text())["attn_smooth"] == 0.1
