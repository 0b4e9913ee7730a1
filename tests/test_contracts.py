"""Every artifact crosses a process boundary without changing a number: written here (tests/contracts.py `write`), read by a
fresh Python process (`read`), and the reader's logits, scores, losses, tokens and rows held against the writer's."""
import subprocess, sys
from pathlib import Path
import pytest, torch
import contracts

HERE = Path(__file__).resolve().parent
exact = dict(rtol=0, atol=0)
f32 = dict(rtol=0, atol=1e-6)  # float32 numbers that went through a file and a new process

@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("contracts")
    ref = contracts.write(root)
    r = subprocess.run([sys.executable, str(HERE/"contracts.py"), str(root)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return ref, torch.load(root/"read.pt", weights_only=True), root

def pair(both, name):
    ref, got, root = both
    assert "error" not in got[name], got[name].get("error")
    return ref[name], got[name], root

def test_every_artifact_is_covered(both):
    assert set(both[0]) == set(both[1]) == set(contracts.NAMES)

def test_select_moe_model(both):
    ref, got, _ = pair(both, "select_moe_model")
    torch.testing.assert_close(got["logits"], ref["logits"], **exact)
    torch.testing.assert_close(got["gates"], ref["gates"], **exact)

@pytest.mark.parametrize("mode", ["full_rank", "lora"])
def test_router(both, mode):
    "The warmup's trained gates (and LoRA adapters) are what the router-data stage scores with."
    ref, got, _ = pair(both, f"router_{mode}")
    torch.testing.assert_close(got["gates"], ref["gates"], **(exact if mode == "full_rank" else f32))  # LoRA: merged on load
    torch.testing.assert_close(got["logits"], ref["logits"], **(exact if mode == "full_rank" else dict(rtol=0, atol=1e-5)))

def test_router_data(both):
    ref, got, _ = pair(both, "router_data")
    assert got["ids"] == ref["ids"]
    from moe_nb.select_moe.router_data import SCORE_FIELDS
    assert set(SCORE_FIELDS) <= set(ref["data"])                            # version 2: the score fields cross too
    for k, v in ref["data"].items():
        torch.testing.assert_close(got["loaded"][k], v, **exact, msg=k)     # the files hold exactly what was computed
        torch.testing.assert_close(got["recomputed"][k], v, **f32, msg=k)   # and a fresh process scores the same

def test_selection(both):
    ref, got, _ = pair(both, "selection")
    assert got["ids"] == ref["ids"] and got["files"] == ref["files"]       # deterministic: byte-equal selections
    assert got["read"] == ref["ids"]["round_robin"]                       # what fine-tuning reads is what was selected

def test_adapter(both):
    ref, got, _ = pair(both, "adapter")
    torch.testing.assert_close(got["logits"], ref["logits"], **exact)

def test_token_shards(both):
    ref, got, _ = pair(both, "token_shards")
    assert got["n_files"] > 1 and got["bytes_equal"]
    assert len(got["blocks"]) == len(ref["blocks"])
    for a, b in zip(got["blocks"], ref["blocks"]):
        for k in b: assert torch.equal(a[k], b[k]), k

def test_teacher_shards(both):
    ref, got, _ = pair(both, "teacher_shards")
    assert torch.equal(got["blocks"], ref["blocks"]) and torch.equal(got["indices"], ref["indices"])
    torch.testing.assert_close(got["values"], ref["values"], **exact)     # stored as float16
    torch.testing.assert_close(got["logz"], ref["logz"], **f32)      # log-normalisers, float32

def test_router_stats_and_expert_choice(both):
    ref, got, _ = pair(both, "router_stats")
    for a, b in zip(got["probs"], ref["probs"]): assert torch.equal(a, b)
    assert torch.equal(got["counts"], ref["counts"])
    assert got["saved_choice"] == ref["choice"] and got["choice"]["layers"] == ref["choice"]["layers"]
    torch.testing.assert_close(got["logits"], ref["logits"], **exact)  # the saved choice gives the same converted model

def test_nexus_model(both):
    ref, got, _ = pair(both, "nexus_model")
    for k in ("fixed", "learnable", "gated"): torch.testing.assert_close(got[k], ref[k], **exact, msg=k)

def test_parscale_model(both):
    ref, got, _ = pair(both, "parscale_model")
    torch.testing.assert_close(got["logits"], ref["logits"], **exact)
    assert torch.equal(got["gen"], ref["gen"])
    for k in ("qwen3", "llama", "folded"): torch.testing.assert_close(got[k], ref[k], **exact, msg=k)  # the folded model: the trained reparameterisation's logits

def test_polychromatic_model(both):
    ref, got, _ = pair(both, "polychromatic_model")
    for k in ("poly", "vanilla", "loss"): torch.testing.assert_close(got[k], ref[k], **exact, msg=k)
    assert got["tau"] and all(t == pytest.approx(0.37) for t in got["tau"])  # the annealed temperature is a saved buffer

def test_engine_checkpoint(both):
    "A run resumed from its step-3 checkpoint in another process continues the writer's run step for step."
    ref, got, _ = pair(both, "engine_checkpoint")
    torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(ref["losses"]), **f32)
    for k, v in ref["final"].items(): torch.testing.assert_close(got["final"][k], v, **f32, msg=k)

def test_results_table(both):
    ref, got, _ = pair(both, "results_table")
    assert got["rows"] == ref["rows"] and got["again"] == ref["rows"] and got["summary"] == ref["summary"]
