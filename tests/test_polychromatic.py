"""End-to-end PolychromaticLM: pretraining (with VanillaLM at equal tokens), SFT and evaluation chained through the CLI;
two processes against one; the compiled PolyGLU kernels; bad input."""
import json, math, subprocess
import pytest
import torch

def moe_nb(*args):
    return subprocess.run(["moe-nb", *map(str, args)], capture_output=True, text=True, timeout=900)

def only_run(runs, pipeline):
    (rd,) = list((runs/pipeline).iterdir())
    return rd, json.loads((rd/"metrics.json").read_text())

def test_pretrain_sft_eval(tmp_path):
    r = moe_nb("run", "polychromatic_pretrain", "--preset", "smoke", "-p", "gradient_checkpointing", "true", "--runs-dir", tmp_path, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    rd, m = only_run(tmp_path, "polychromatic_pretrain")
    # routing entropy logged through training, and the portable checkpoint read back in this process: the saved model, step 30, tau 0.1
    from moe_nb.polychromatic.model import load_polychromatic
    from moe_nb.polychromatic.train import load_portable
    assert 0 < m["routing_entropy_static_final"] <= math.log(4) and 0 < m["routing_entropy_dynamic_final"] <= math.log(4)
    pm, step, tau = load_portable(rd/"portable")
    ids = torch.randint(0, 4096, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): assert torch.equal(pm.eval()(ids).logits, load_polychromatic(rd/"model").eval()(ids).logits)
    assert step == 30 and abs(tau - 0.1) < 1e-6 and pm.config.gradient_checkpointing
    assert m["status"] == "completed" and m["final_loss"] < math.log(4096)
    assert {"eval_loss_math", "eval_loss_stem", "eval_loss_code", "vanilla_eval_loss"} <= set(m)
    assert abs(m["tau_final"] - 0.1) < 1e-6  # annealed to 0.1 at the last step (logged every step in the smoke preset)
    assert m["params"] > m["vanilla_params"]  # PolyGLU adds alpha, beta and the routers
    assert (rd/"model"/"polychromatic.json").exists() and (rd/"vanilla"/"model"/"polychromatic.json").exists()
    mix = m["realised_mix"]; assert mix["math"] > mix["stem"] > mix["code"]

    r = moe_nb("run", "polychromatic_sft", "--preset", "smoke", "-p", "epochs", "1.0", "--runs-dir", tmp_path, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    sd, s = only_run(tmp_path, "polychromatic_sft")
    last = json.loads((sd/"metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == -(-s["n_train"] // 8)  # one epoch at 8 conversations per step
    assert s["sft_loss_after"] < s["sft_loss_before"] and s["tau_unchanged"] and abs(s["tau"] - 0.1) < 1e-6
    assert s["base"] == str(rd/"model")

    r = moe_nb("run", "polychromatic_eval", "--preset", "smoke", "--runs-dir", tmp_path, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    ed, e = only_run(tmp_path, "polychromatic_eval")
    assert e["model_dir"] == str(rd/"model")  # 'latest' is the pretraining run, and it has a VanillaLM to compare
    for k in ("ppl_math", "ppl_code", "ppl_prose", "vanilla_ppl_all"): assert 1 < e[k] < 4096
    assert 0 <= e["heldout_acc"] <= 1 and 0 <= e["vanilla_heldout_acc"] <= 1
    assert all(0 <= x <= math.log(4) + 1e-6 for x in e["static_entropy"] + e["dynamic_entropy"])
    shares = e["dynamic_share"]; assert all(abs(sum(v[i] for v in shares.values()) - 1) < 1e-4 for i in range(2))
    for f in ("neurotransmitter_map.png", "routing_entropy.png", "routing_domain_shift.png", "training_curves.png", "lm_eval_rows.json"):
        assert (ed/f).exists(), f

def test_two_processes_match_one(tmp_path):
    """Two data-parallel processes with batch b see the samples one process with batch 2b sees: the same tokens and the
    same losses step by step (up to the per-rank averaging of unequal label counts; Adam amplifies that in the weights
    of rare tokens, so losses are compared, not weights)."""
    from moe_nb.polychromatic.train import PretrainConfig, pretrain, launch_job
    base = dict(n_embedded=60, seq_len=32, n_eval_blocks=2, shard_tokens=10_000, model={"gumbel_train": False}, shards_dir=str(tmp_path/"shards"))
    train = dict(steps=6, lr=3e-3, tracker="none", progress=False, cpu=True, log_every=1)
    pretrain(PretrainConfig(**base, train={**train, "batch_size": 4}), tmp_path/"one")
    launch_job("pretrain", PretrainConfig(**base, train={**train, "batch_size": 2}), tmp_path/"two", num_processes=2, timeout=600)
    h1, h2 = ([json.loads(l) for l in (tmp_path/d/"metrics.jsonl").read_text().splitlines()] for d in ("one", "two"))
    assert [r["tokens"] for r in h1] == [r["tokens"] for r in h2] and len(h1) == 6
    assert abs(h1[0]["loss"] - h2[0]["loss"]) < 2e-3  # same initial weights and samples
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(h1, h2)) < 1e-2
    assert abs(h1[-1]["eval_loss"] - h2[-1]["eval_loss"]) < 1e-2
    assert (tmp_path/"two"/"model"/"polychromatic.json").exists()

def test_compiled_kernels_match_eager():
    from moe_nb.polychromatic.polyglu import poly_mix
    torch.manual_seed(0)
    z, u, r, al = torch.randn(100, 32), torch.randn(100, 32), torch.randn(100, 4), torch.randn(32, 4)
    outs = []
    for compiled in (False, True):
        ins = [t.clone().requires_grad_() for t in (z, u, r, al)]
        y = poly_mix(*ins, tau=0.6, seed=1, group=20, chunk=32, compiled=compiled); y.square().sum().backward()
        outs.append([y.detach()] + [t.grad for t in ins])
    for a, b in zip(*outs): torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

@pytest.mark.parametrize("args,message", [
    (["-p", "preset", "7b"], "unknown PolychromaticLM preset '7b'"),
    (["-p", "model_kw", "{n_heads: 5}"], "n_heads=5 does not divide d_model=64"),
])
def test_bad_config(tmp_path, args, message):
    r = moe_nb("run", "polychromatic_pretrain", "--preset", "smoke", *args, "--runs-dir", tmp_path, "--quiet")
    assert r.returncode == 1 and message in r.stdout, r.stdout + r.stderr
    rd, m = only_run(tmp_path, "polychromatic_pretrain")
    assert m["status"] == "failed" and not (rd/"model").exists()

def test_shards_of_another_tokenizer(tmp_path):
    from moe_nb.embedded import get_tokenizer
    from moe_nb.tokens import tokenize_sources
    tokenize_sources({"math": "embedded:math", "stem": "embedded:prose", "code": "embedded:code"}, get_tokenizer(vocab_size=2048),
                     tmp_path/"shards", shard_tokens=20_000, n_embedded=100)
    r = moe_nb("run", "polychromatic_pretrain", "--preset", "smoke", "-p", "shards_dir", tmp_path/"shards", "--runs-dir", tmp_path/"runs", "--quiet")
    assert r.returncode == 1 and "manifest.json: an existing shard directory with tokenizer=" in r.stdout, r.stdout + r.stderr


def test_paper_eval_tasks_are_lm_evals_own():
    "The paper preset's benchmarks are installed lm-eval tasks (their data is fetched by lm-eval where it runs; nothing is downloaded here)."
    from moe_nb.cli import resolve_params
    from moe_nb.eval import check_tasks
    _, _, full = resolve_params("polychromatic_eval", None, "paper")
    assert full["tasks"] == ["gsm8k", "minerva_math", "mmlu_stem"]
    check_tasks(full["tasks"])
