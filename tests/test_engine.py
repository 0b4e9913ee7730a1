"Engine behaviour that needs real processes: resume after SIGKILL, and 2-process data parallel (gloo on CPU)."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import torch
from moe_nb.core import load_tensors
from moe_nb.engine import read_tracker_log

HERE = Path(__file__).resolve().parent
SCRIPT = HERE/"engine_script.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

def losses(run_dir):
    return [json.loads(l)["loss"] for l in (Path(run_dir)/"metrics.jsonl").read_text().splitlines()]

def train(run_dir, *args):
    r = subprocess.run([sys.executable, str(SCRIPT), str(run_dir), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]

def test_resume_after_kill(tmp_path):
    train(tmp_path/"ref", "--steps", 30)
    ref = losses(tmp_path/"ref")
    run = tmp_path/"killed"
    p = subprocess.Popen([sys.executable, str(SCRIPT), str(run), "--steps", "30", "--save-every", "5", "--sleep", "0.3"],
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run/"checkpoints"/"step-0000015").exists():
        assert p.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    time.sleep(0.5)  # let it log a step or two past the checkpoint: those lines must be dropped on resume
    p.send_signal(signal.SIGKILL); p.wait()
    done = len(losses(run))
    assert 15 <= done < 30, done
    train(run, "--steps", 30, "--save-every", 5)
    got = losses(run)
    assert len(got) == 30
    torch.testing.assert_close(torch.tensor(got), torch.tensor(ref), rtol=0, atol=1e-6)
    a, b = load_tensors(tmp_path/"ref"/"final-0.safetensors"), load_tensors(run/"final-0.safetensors")
    for k in a: torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)

def test_two_process_ddp_equals_single_process(tmp_path):
    # dropout off: each rank draws its own dropout masks, so only a deterministic model can match exactly
    train(tmp_path/"single", "--steps", 12, "--batch-size", 8, "--dropout", 0)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           str(SCRIPT), str(tmp_path/"ddp"), "--steps", "12", "--batch-size", "4", "--dropout", "0"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    torch.testing.assert_close(torch.tensor(losses(tmp_path/"ddp")), torch.tensor(losses(tmp_path/"single")), rtol=0, atol=1e-5)
    r0, r1 = load_tensors(tmp_path/"ddp"/"final-0.safetensors"), load_tensors(tmp_path/"ddp"/"final-1.safetensors")
    single = load_tensors(tmp_path/"single"/"final-0.safetensors")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{k} differs between ranks"
        torch.testing.assert_close(r0[k], single[k], rtol=0, atol=1e-5)

TRACKER_RUN = """
import json, sys, torch
from pathlib import Path
from transformers import Qwen2Config, Qwen2ForCausalLM
from moe_nb.engine import Trainer, TrainConfig, read_tracker_log
root, out = Path(sys.argv[1]), {}
for tracker in ("tensorboard", "wandb", "trackio"):
    torch.manual_seed(0)
    m = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                     num_key_value_heads=2, max_position_embeddings=32))
    cfg = TrainConfig(steps=6, batch_size=4, lr=3e-3, warmup_steps=1, log_every=2, tracker=tracker, progress=False, cpu=True)
    hist = Trainer(m, cfg, torch.randint(0, 64, (16, 12)), run_dir=root/tracker).fit()
    out[tracker] = {"logged": hist, "tracked": read_tracker_log(root/tracker, tracker)}
(root/"out.json").write_text(json.dumps(out))
"""

def test_trackers_record_what_the_run_logged(tmp_path):
    "TensorBoard, W&B (offline, into the run directory) and trackio each hold the rows of metrics.jsonl, read back from their files."
    env = {**ENV, "TRACKIO_DIR": str(tmp_path/"trackio"), "WANDB_SILENT": "true"}
    env.pop("WANDB_MODE", None)
    r = subprocess.run([sys.executable, "-c", TRACKER_RUN, str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads((tmp_path/"out.json").read_text())
    for tracker, o in out.items():
        assert [t["step"] for t in o["tracked"]] == [2, 4, 6], tracker
        for t, l in zip(o["tracked"], o["logged"]):
            for k in ("loss", "lr", "grad_norm"): assert abs(t[k] - l[k]) <= 1e-6 * max(1.0, abs(l[k])), (tracker, k)
    logs = list((tmp_path/"wandb").rglob("run-*.wandb"))
    assert logs, "W&B writes its offline run into the run directory"
    wandb_log_read_while_written(logs[0], tmp_path/"live", out["wandb"]["tracked"])

def wandb_log_read_while_written(log, live, full):
    "A log that lacks its last row and its exit record (W&B's service still writing) is read once it is complete; a quiet one as it is."
    import threading
    data = log.read_bytes()
    cut = next(n for n in range(len(data), 0, -1)    # the longest prefix that holds only the first two rows
               if sum(r.WhichOneof("record_type") == "history" for r in _wandb_records_of(data[:n], live)) == 2)
    (live/log.name).write_bytes(data[:cut])
    threading.Timer(1.0, lambda: (live/log.name).write_bytes(data)).start()
    t0 = time.time()
    assert read_tracker_log(live, "wandb") == full
    assert time.time() - t0 >= 0.9, "the reader waited for the service to finish the log"
    (live/log.name).write_bytes(data[:cut]); os.utime(live/log.name, (0, 0))  # a crashed run: no exit record, quiet for decades
    assert [r["step"] for r in read_tracker_log(live, "wandb")] == [2, 4]

def _wandb_records_of(data, d):
    from moe_nb.engine import _wandb_records
    d.mkdir(exist_ok=True); (d/"probe.wandb").write_bytes(data)
    return _wandb_records(d/"probe.wandb")

def test_missing_tracker_refuses_to_start(monkeypatch):
    "A tracker whose package is missing stops the configuration, instead of a run that logs nothing."
    import pytest
    from moe_nb import engine
    monkeypatch.setitem(engine.TRACKERS, "trackio", "no_such_trackio")  # as if trackio were not installed
    with pytest.raises(ValueError, match="'trackio', but the no_such_trackio package is not installed: pip install no_such_trackio"):
        engine.TrainConfig(tracker="trackio")
