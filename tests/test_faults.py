"""A hostile user's probe: bad -p values, bad files of every kind, kills during training, shard writing and metric appends,
cache corruption. Every fault must end in a clear message (naming the parameter, file or line) or a correct recovery,
never a raw traceback, a silent acceptance or wrong state left behind. Most probes run in this process (they fail before
any kernel starts); the kills need real processes."""
import json, os, signal, subprocess, sys, time, warnings
from pathlib import Path
import pytest, torch

ROOT = Path(__file__).resolve().parent.parent
PIPES = ROOT/"nbs"/"pipelines"

def cli(capsys, *args) -> tuple[int, str]:
    from moe_nb.cli import main
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out + out.err

# ---------------------------------------------------------------------------------------- the command line, before a run
BAD_ARGS = [  # (arguments after `moe-nb run`, what the message must say)
    (["tiny_lm", "-p", "steps", "[1,"], "parameter 'steps': '[1,' is not a valid value"),
    (["tiny_lm", "-p", "steps", "1\t2"], "parameter 'steps': '1\\t2' is not a valid value"),
    (["tiny_lm", "-p", "steps", "!!python/object/apply:os.system [echo pwned]"], "is not a valid value"),
    (["tiny_lm", "-p", "stepz", "5"], "unknown parameter 'stepz' for tiny_lm.ipynb; did you mean 'steps'?"),
    (["tiny_lm", "-p", "steps", "many"], "parameter 'steps' of tiny_lm.ipynb expects int"),
    (["tiny_lm", "-p", "steps", "0"], "steps=0: expected > 0"),
    (["tiny_lm", "-p", "seq_len", "0"], "seq_len=0: expected > 0"),
    (["tiny_lm", "-p", "num_heads", "3"], "num_heads=3 does not divide hidden_size=64"),
    (["tiny_lm", "-p", "num_kv_heads", "3"], "num_kv_heads=3 does not divide num_heads=4"),
    (["tiny_lm", "-p", "eval_fraction", "1.5"], "eval_fraction=1.5: expected a value in (0, 1)"),
    (["tiny_lm", "-p", "eval_fraction", "0"], "eval_fraction=0.0: expected a value in (0, 1)"),
    (["tiny_lm", "-p", "vocab_size", "-5"], "vocab_size=-5: expected > 0"),
    (["tiny_lm", "-p", "weight_decay", "-0.1"], "weight_decay=-0.1: expected >= 0"),
    (["tiny_lm", "-p", "lr", "inf"], "lr=inf: expected a finite number"),
    (["tiny_lm", "-p", "lr", "nan"], "lr=nan: expected a finite number"),
    (["tiny_lm", "-p", "warmup_steps", "400"], "warmup_steps=400 > steps=300"),
    (["select_moe_selection", "-p", "k_min", "20", "-p", "k_max", "10"], "k_min=20 > k_max=10"),
    (["select_moe_warmup", "-p", "subset_ratio", "0"], "subset_ratio=0.0: expected a value in (0, 1]"),
    (["tiny_lm", "-p", "run_dir", "/tmp/x"], "moe-nb chooses the run directory; to continue a run, use `moe-nb resume RUN`"),
    (["tiny_lm", "--preset", "huge"], "--preset 'huge' is not defined for tiny_lm"),
    (["tiny_lm", "-p", "steps", "5", "-p", "steps", "6"], "-p steps is given twice"),
    (["no_such_pipeline"], "notebook 'no_such_pipeline' not found"),
]

@pytest.mark.parametrize("args,msg", BAD_ARGS, ids=[f"{a[0]}:{' '.join(a[1:])[:30]}" for a, _ in BAD_ARGS])
def test_bad_run_arguments(capsys, tmp_path, args, msg):
    rc, out = cli(capsys, "run", *args, "--runs-dir", tmp_path/"runs")
    assert rc == 2 and msg in out and "Traceback" not in out, out
    assert not (tmp_path/"runs").exists() or not any((tmp_path/"runs").iterdir()), "a refused run leaves no run directory"

def test_runs_dir_is_a_file(capsys, tmp_path):
    (tmp_path/"afile").write_text("x")
    rc, out = cli(capsys, "run", "tiny_lm", "--runs-dir", tmp_path/"afile")
    assert rc == 2 and "--runs-dir" in out and "a file, not a directory" in out, out
    rc, out = cli(capsys, "run", "tiny_lm", "--runs-dir", tmp_path/"afile"/"sub")
    assert rc == 2 and "cannot create it" in out, out

def test_model_directory_without_tokenizer(capsys, tmp_path):
    from moe_nb.zoo import random_model
    random_model("olmoe").save_pretrained(tmp_path/"ck")
    rc, out = cli(capsys, "run", "select_moe_warmup", "-p", "model", tmp_path/"ck", "--runs-dir", tmp_path/"runs")
    assert rc == 2 and "a model directory without tokenizer files" in out and not (tmp_path/"runs").exists(), out

def toy(path:Path, kernelspec=True, params=True) -> Path:
    import nbformat
    cells = ([nbformat.v4.new_code_cell("run_dir = None\nsteps = 3", metadata={"tags": ["parameters"]})] if params else []) + \
            [nbformat.v4.new_code_cell("from moe_nb.runs import update_metrics\nupdate_metrics(run_dir, twice=steps * 2)")]
    nb = nbformat.v4.new_notebook(cells=cells)
    if kernelspec: nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    nbformat.write(nb, path); return path

def test_notebook_not_json(capsys, tmp_path):
    (tmp_path/"broken.ipynb").write_text("{ not json")
    rc, out = cli(capsys, "run", tmp_path/"broken.ipynb", "--runs-dir", tmp_path/"runs")
    assert rc == 2 and "broken.ipynb: not a readable notebook" in out and "Traceback" not in out, out

def test_notebook_without_parameters(capsys, tmp_path):
    rc, out = cli(capsys, "run", toy(tmp_path/"np.ipynb", params=False), "--runs-dir", tmp_path/"runs")
    assert rc == 2 and "no cell tagged 'parameters'" in out, out

def test_notebook_without_kernelspec_runs(tmp_path):
    "No kernelspec: moe-nb names the kernel itself, so the notebook runs (correct behaviour, not an error)."
    from moe_nb.cli import run_notebook
    rd, m = run_notebook(toy(tmp_path/"nk.ipynb", kernelspec=False), {"steps": 4}, runs_dir=tmp_path/"runs", progress=False, log_output=False)
    assert m["status"] == "completed" and m["twice"] == 8

@pytest.mark.parametrize("text,msg", [("presets: [1,", "not valid YAML"), ("- a\n- b\n", "expected a mapping with 'presets'"),
                                      ("presets:\n  tiny_lm:\n    smoke: 5\n", "'smoke' is not a mapping")])
def test_bad_presets_file(capsys, tmp_path, monkeypatch, text, msg):
    import shutil
    shutil.copy(PIPES/"tiny_lm.ipynb", tmp_path)
    (tmp_path/"presets.yaml").write_text(text)
    monkeypatch.setenv("MOE_NB_PIPELINES", str(tmp_path))
    rc, out = cli(capsys, "run", "tiny_lm", "--preset", "smoke", "--runs-dir", tmp_path/"runs")
    assert rc == 2 and "presets.yaml" in out and msg in out and "Traceback" not in out, out

def test_runs_listing_survives_a_bad_run(capsys, tmp_path):
    from moe_nb.runs import make_run_dir, update_metrics
    good = make_run_dir("p", {"a": 1}, tmp_path); update_metrics(good, status="completed")
    bad = make_run_dir("p", {"a": 2}, tmp_path); (bad/"metrics.json").write_text("[1, 2, 3]")
    torn = make_run_dir("p", {"a": 3}, tmp_path); (torn/"metrics.json").write_text('{"status": "comp')
    rc, out = cli(capsys, "runs", "--runs-dir", tmp_path)
    assert rc == 0 and out.count("unreadable") == 2 and "completed" in out, out

def test_resume_refusals(capsys, tmp_path):
    from moe_nb.runs import make_run_dir, update_metrics
    rd = make_run_dir("tiny_lm", {"a": 1}, tmp_path); update_metrics(rd, status="completed")
    rc, out = cli(capsys, "resume", rd, "--runs-dir", tmp_path)
    assert rc == 2 and "already completed; nothing to resume" in out, out
    rc, out = cli(capsys, "resume", tmp_path/"nope", "--runs-dir", tmp_path)
    assert rc == 2 and "nope: not a run directory" in out, out
    rc, out = cli(capsys, "resume", "no_such_pipeline", "--runs-dir", tmp_path)
    assert rc == 2 and "neither a run directory (with params.yaml) nor a pipeline with runs" in out, out

# ---------------------------------------------------------------------------------------- loaders name the file
def test_jsonl_bad_utf8_and_empty_records(tmp_path):
    from moe_nb.data import read_jsonl, load_records, DataError
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}]}
    (tmp_path/"d.jsonl").write_bytes(json.dumps(good).encode() + b"\n" + b'{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: not valid UTF-8"): read_jsonl(tmp_path/"d.jsonl")
    empty = {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": ""}]}
    (tmp_path/"d.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(empty) + "\n")
    with pytest.raises(DataError, match=r"d.jsonl:2: every message is empty"): read_jsonl(tmp_path/"d.jsonl")
    (tmp_path/"d.jsonl").write_text(json.dumps(good) + "\n"); (tmp_path/"notes.csv").write_text("a,b")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always"); recs = load_records(tmp_path)
    assert len(recs) == 1 and recs.ignored and "notes.csv" in str(w[0].message)

def truncate(f:Path, keep:int=200): f.write_bytes(f.read_bytes()[:keep])

def test_truncated_model_checkpoint(tmp_path):
    from moe_nb.zoo import random_model, load_backbone
    random_model("qwen2").save_pretrained(tmp_path/"m"); truncate(tmp_path/"m"/"model.safetensors")
    with pytest.raises(ValueError, match=r"the checkpoint's weights cannot be loaded .* truncated or corrupt"): load_backbone(str(tmp_path/"m"))

def test_pickle_only_checkpoints_refused(tmp_path):
    from moe_nb.zoo import random_model, load_backbone
    from moe_nb.parscale.model import load_parscale, convert_to_parscale_model
    m = random_model("qwen2"); m.config.save_pretrained(tmp_path/"pk"); torch.save(m.state_dict(), tmp_path/"pk"/"pytorch_model.bin")
    with pytest.raises(ValueError, match="the weights are pickles"): load_backbone(str(tmp_path/"pk"))
    ps = convert_to_parscale_model(m, P=2, n_tokens=2); ps.config.save_pretrained(tmp_path/"pp")
    torch.save(ps.state_dict(), tmp_path/"pp"/"pytorch_model.bin")
    with pytest.raises(ValueError, match="the weights are pickles"): load_parscale(tmp_path/"pp")

def test_truncated_adapter(tmp_path):
    from moe_nb.zoo import random_model
    from moe_nb.engine import add_lora
    from moe_nb.select_moe.finetune import load_adapted
    add_lora(random_model("qwen2"), r=2, target_modules=["q_proj"]).save_pretrained(tmp_path/"ad")
    truncate(tmp_path/"ad"/"adapter_model.safetensors", 50)
    with pytest.raises(ValueError, match=r"adapter_model.safetensors: not a readable safetensors file"): load_adapted(random_model("qwen2"), tmp_path/"ad")

def test_truncated_polychromatic(tmp_path):
    from moe_nb.polychromatic.model import PolychromaticLM, poly_config, save_polychromatic, load_polychromatic
    save_polychromatic(PolychromaticLM(poly_config("tiny", n_layers=1)), tmp_path/"p"); truncate(tmp_path/"p"/"model.safetensors")
    with pytest.raises(ValueError, match=r"p/model.safetensors: not a readable safetensors file"): load_polychromatic(tmp_path/"p")
    (tmp_path/"p"/"polychromatic.json").write_text('{"class": ')
    with pytest.raises(ValueError, match=r"polychromatic.json: not valid JSON"): load_polychromatic(tmp_path/"p")

def tiny_run(run_dir, steps=6, save_every=2, **kw):
    from moe_nb.engine import Trainer, TrainConfig
    from moe_nb.zoo import random_model
    data = torch.randint(0, 4000, (16, 12), generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1e-3, warmup_steps=1, log_every=1, save_every=save_every, tracker="none",
                      progress=False, cpu=True, keep_checkpoints=5, **kw)
    return Trainer(random_model("qwen2", num_hidden_layers=1), cfg, data, run_dir=run_dir)

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rd = tmp_path_factory.mktemp("engine")/"run"
    hist = tiny_run(rd).fit()
    return rd, hist

def fresh_copy(trained, tmp_path):
    import shutil
    shutil.copytree(trained[0], tmp_path/"run"); return tmp_path/"run"

def test_checkpoint_truncated_weights(trained, tmp_path):
    rd = fresh_copy(trained, tmp_path); truncate(rd/"checkpoints"/"step-0000006"/"model.safetensors")
    with pytest.raises(ValueError, match=r"step-0000006/model.safetensors: not a readable safetensors file"): tiny_run(rd).fit()

def test_checkpoint_trainer_state_unparsable(trained, tmp_path):
    rd = fresh_copy(trained, tmp_path); (rd/"checkpoints"/"step-0000006"/"trainer_state.json").write_text("{")
    with pytest.raises(ValueError, match=r"trainer_state.json: not valid JSON"): tiny_run(rd).fit()

def test_checkpoint_optimizer_corrupt(trained, tmp_path):
    rd = fresh_copy(trained, tmp_path); truncate(rd/"checkpoints"/"step-0000006"/"optimizer.pt", 30)
    with pytest.raises(ValueError, match=r"optimizer.pt: cannot be read"): tiny_run(rd).fit()

def test_checkpoint_past_steps(trained, tmp_path):
    rd = fresh_copy(trained, tmp_path)
    with pytest.raises(ValueError, match=r"a checkpoint at step 6, past this run's steps=4"): tiny_run(rd, steps=4).fit()

def test_torn_metrics_line_then_resume(trained, tmp_path):
    "A kill during a metrics append tears the last line: resuming drops it and continues the run exactly."
    import shutil
    rd = fresh_copy(trained, tmp_path); shutil.rmtree(rd/"checkpoints"/"step-0000006")
    with open(rd/"metrics.jsonl", "a") as f: f.write('{"step": 7, "lo')
    tiny_run(rd).fit()
    rows = [json.loads(l) for l in (rd/"metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in rows] == pytest.approx([h["loss"] for h in trained[1]], abs=1e-6)

def test_nonfinite_hyperparameters_refused():
    from moe_nb.engine import TrainConfig
    for k, v in (("lr", float("inf")), ("lr", float("nan")), ("weight_decay", float("nan")), ("clip_norm", float("inf"))):
        with pytest.raises(ValueError, match=rf"parameter '{k}' expects a finite number"): TrainConfig(**{k: v})

def test_manifests_that_do_not_parse(tmp_path):
    from moe_nb.tokens import write_token_shards, TokenShards
    from moe_nb.select_moe.router_data import load_router_data
    from moe_nb.embedded import get_tokenizer
    write_token_shards(["a b c"] * 20, get_tokenizer(), tmp_path/"sh", shard_tokens=30)
    (tmp_path/"sh"/"manifest.json").write_text('{"format": ')
    with pytest.raises(ValueError, match=r"sh/manifest.json: not valid JSON"): TokenShards(tmp_path/"sh")
    (tmp_path/"rd").mkdir(); (tmp_path/"rd"/"manifest.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match=r"rd/manifest.json: not valid JSON"): load_router_data(tmp_path/"rd")

def test_shard_overwritten_at_the_same_size(tmp_path):
    from moe_nb.tokens import write_token_shards, TokenShards
    from moe_nb.embedded import get_tokenizer
    from moe_nb.data import DataError
    tok, docs = get_tokenizer(), [f"document number {i} about things" for i in range(60)]
    man = write_token_shards(docs, tok, tmp_path/"sh", shard_tokens=50)
    f = tmp_path/"sh"/man["shards"][1]["file"]
    good = f.read_bytes(); f.write_bytes(bytes(reversed(good)))  # same size, other tokens
    with pytest.raises(DataError, match="SHA-256 does not match"): TokenShards(tmp_path/"sh")
    with warnings.catch_warnings(record=True): warnings.simplefilter("always"); write_token_shards(docs, tok, tmp_path/"sh", shard_tokens=50)
    assert f.read_bytes() == good and len(TokenShards(tmp_path/"sh", tok)) == man["tokens"]  # re-tokenised

def test_zoo_and_tokenizer_caches_heal(tmp_path, monkeypatch):
    import shutil
    from moe_nb import embedded as data
    from moe_nb.zoo import pretrained_tiny
    from moe_nb.embedded import get_tokenizer
    a = {k: v.clone() for k, v in pretrained_tiny("qwen2", steps=4, cache_dir=tmp_path/"c").state_dict().items()}  # not the mmapped file
    (w,) = (tmp_path/"c"/"zoo").glob("*/model.safetensors"); truncate(w)
    b = pretrained_tiny("qwen2", steps=4, cache_dir=tmp_path/"c")
    assert all(torch.equal(a[k], v) for k, v in b.state_dict().items())
    from moe_nb.core import cache_root
    src = next(p for p in cache_root().glob("tokenizer-4096-*") if (p/"tokenizer.json").exists())
    shutil.copytree(src, tmp_path/"t"/src.name)
    truncate(tmp_path/"t"/src.name/"tokenizer.json", 100)
    monkeypatch.setattr(data, "embedded_corpus", lambda n, seed=0: {"math": ["1 + 1 = 2"] * 20})  # a quick rebuild
    monkeypatch.setattr(data, "embedded_instructions", lambda n, bad_fraction=0.0, seed=0: ([], []))
    tok = get_tokenizer(cache_dir=tmp_path/"t")  # rebuilt in place of the damaged entry
    assert tok("1 + 1")["input_ids"] and (tmp_path/"t"/src.name/"tokenizer.json").stat().st_size > 100

def test_atomic_files_keep_plain_permissions(tmp_path):
    from moe_nb.core import save_json, atomic_dir
    (tmp_path/"plain").write_text("{}"); save_json({}, tmp_path/"atomic.json")
    with atomic_dir(tmp_path/"d") as d: (d/"x").write_text("1")
    mode = lambda p: p.stat().st_mode & 0o777
    assert mode(tmp_path/"atomic.json") == mode(tmp_path/"plain") and mode(tmp_path/"d") == 0o777 & ~_umask()

def _umask():
    m = os.umask(0); os.umask(m); return m

# ---------------------------------------------------------------------------------------- kills
def moe_nb(*args, **kw):
    return subprocess.run(["moe-nb", *map(str, args)], capture_output=True, text=True, timeout=900, **kw)

def test_kill_during_training_then_resume(tmp_path):
    "SIGKILL mid-run: the run shows as crashed; `moe-nb resume` finishes it from its checkpoint, every step logged once."
    runs = tmp_path/"runs"
    args = ["tiny_lm", "--preset", "smoke", "-p", "steps", "30", "-p", "warmup_steps", "3", "-p", "tracker", "none"]
    p = subprocess.Popen(["moe-nb", "run", *args, "--runs-dir", runs, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(runs.glob("tiny_lm/*/checkpoints/step-0000006")):
        assert p.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait()
    (rd,) = list((runs/"tiny_lm").iterdir())
    listing = moe_nb("runs", "--runs-dir", runs)
    assert "crashed" in listing.stdout, listing.stdout
    r = moe_nb("resume", "tiny_lm", "--runs-dir", runs, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((rd/"metrics.json").read_text())
    assert m["status"] == "completed" and m["resumed"] == 1 and m["final_loss"] < m["first_loss"]
    assert "resumed from" in (rd/"run.log").read_text()
    steps = [json.loads(l)["step"] for l in (rd/"metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # the whole run, each logged step once

SHARD_WRITER = """
import sys, time
from moe_nb.tokens import write_token_shards
from moe_nb.embedded import get_tokenizer
def docs():
    for i in range(400):
        if sys.argv[2] == "slow" and i > 100: time.sleep(0.02)
        yield f"document {i}: " + "word " * (i % 17 + 3)
write_token_shards(docs(), get_tokenizer(), sys.argv[1], shard_tokens=500, batch_docs=16)
"""

def test_kill_during_shard_writing(tmp_path):
    "SIGKILL while shards are written: running the writer again finishes the directory, byte-identical to a clean write."
    p = subprocess.Popen([sys.executable, "-c", SHARD_WRITER, str(tmp_path/"killed"), "slow"])
    deadline = time.time() + 120
    while not (tmp_path/"killed"/"shard-00002.bin").exists():
        assert p.poll() is None and time.time() < deadline; time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait()
    assert not json.loads((tmp_path/"killed"/"manifest.json").read_text())["complete"]
    for d, mode in ((tmp_path/"killed", "fast"), (tmp_path/"clean", "fast")):
        assert subprocess.run([sys.executable, "-c", SHARD_WRITER, str(d), mode], timeout=120).returncode == 0
    a, b = sorted((tmp_path/"killed").glob("shard-*.bin")), sorted((tmp_path/"clean").glob("shard-*.bin"))
    assert [f.name for f in a] == [f.name for f in b] and all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    assert not list((tmp_path/"killed").glob(".*.tmp")), "no temporary file is left"

def test_bad_custom_trash_expert_named_before_training():
    from moe_nb.select_moe.model import convert_olmoe_to_select_moe
    from moe_nb.zoo import random_model
    with pytest.raises(ValueError, match="trash_expert_custom='torch:nope': module 'torch' has no attribute 'nope'"):
        convert_olmoe_to_select_moe(random_model("olmoe"), trash_expert_mode="custom", trash_expert_custom="torch:nope")
    with pytest.raises(ValueError, match="expected 'module:callable'"):
        convert_olmoe_to_select_moe(random_model("olmoe"), trash_expert_mode="custom", trash_expert_custom="tanh")

def test_ctrl_c_is_one_line_and_leaves_the_run_resumable(tmp_path):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("run_dir = None", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell("import time\ntime.sleep(60)"), nbformat.v4.new_code_cell("x = 1")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    nbformat.write(nb, tmp_path/"sleepy.ipynb")
    p = subprocess.Popen(["moe-nb", "run", tmp_path/"sleepy.ipynb", "--runs-dir", tmp_path/"runs", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((tmp_path/"runs").glob("sleepy/*/sleepy.ipynb")):  # the kernel is running the notebook
        assert p.poll() is None and time.time() < deadline; time.sleep(0.1)
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    (rd,) = list((tmp_path/"runs"/"sleepy").iterdir())
    assert p.returncode == 130 and "Traceback" not in err, err
    assert f"moe-nb: interrupted; {rd} is marked interrupted (continue it with `moe-nb resume {rd}`)" in err, err
    assert json.loads((rd/"metrics.json").read_text())["status"] == "interrupted"
    ran = nbformat.read(rd/"sleepy.ipynb", as_version=4)
    assert ran.cells[-1].metadata["papermill"]["status"] == "pending", "a cell that never ran is not marked completed"
