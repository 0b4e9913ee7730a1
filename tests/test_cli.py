"End-to-end tests of the `moe-nb` command: real papermill runs into run directories."
import json, subprocess
from pathlib import Path
import nbformat, pytest, yaml

ROOT = Path(__file__).resolve().parent.parent

def moe_nb(*args, cwd=None, env=None):
    import os
    return subprocess.run(["moe-nb", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=900,
                          env={**os.environ, **(env or {})})

def only_run(runs: Path, pipeline: str) -> Path:
    dirs = list((runs/pipeline).iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]

def toy_notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("run_dir = None\nsteps = 3", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("x = steps * 2"),
        nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    nbformat.write(nb, path)
    return path

def test_installed():
    import moe_nb
    r = subprocess.run(["moe-nb", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "run" in r.stdout and "demo" in r.stdout
    assert moe_nb.__version__

def test_run_tiny_lm(tmp_path):
    runs = tmp_path/"runs"
    # --wandb-offline (the seeds' flag): W&B tracks offline into the run even where WANDB_MODE asks for online (no network here)
    r = moe_nb("run", "tiny_lm", "--preset", "smoke", "-p", "steps", "60", "--wandb-offline", "--runs-dir", runs, "--quiet",
               env={"WANDB_MODE": "online", "WANDB_SILENT": "true"})
    assert r.returncode == 0, r.stdout + r.stderr
    rd = only_run(runs, "tiny_lm")
    assert yaml.safe_load((rd/"params.yaml").read_text())["tracker"] == "wandb" and list(rd.glob("wandb/offline-run-*/run-*.wandb"))
    r = moe_nb("plot", rd, "--keys", "loss,lr,no_such", "--smooth", "3")  # the seed's plot_metrics, with its smoothing window
    assert r.returncode == 0 and (rd/"metrics_smooth3.png").read_bytes()[:4] == b"\x89PNG", r.stdout + r.stderr
    r = moe_nb("plot", rd, "--keys", "kl")
    assert r.returncode == 2 and "none of the metrics ['kl'] was logged" in r.stderr, r.stderr
    r = moe_nb("run", "tiny_lm", "--wandb-offline", "-p", "tracker", "none", "--check")
    assert r.returncode == 2 and "--wandb-offline conflicts with -p tracker none" in r.stderr, r.stderr
    names = {p.name for p in rd.iterdir()}
    assert {"tiny_lm.ipynb", "params.yaml", "metrics.json", "loss.png", "run.log"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    params = yaml.safe_load((rd/"params.yaml").read_text())
    assert params["steps"] == 60 and params["seq_len"] == 64  # -p beats the preset, the preset beats the default
    m = json.loads((rd/"metrics.json").read_text())
    assert m["status"] == "completed" and m["loss_decreased"] and m["final_loss"] < m["first_loss"]
    assert (rd/"loss.png").read_bytes()[:4] == b"\x89PNG"
    executed = nbformat.read(rd/"tiny_lm.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    log = (rd/"run.log").read_text()
    assert "training 385,600 of 385,600 parameters" in log and "step 60: loss" in log and "eval_loss" in log
    listing = moe_nb("runs", "--runs-dir", runs)
    assert listing.returncode == 0 and rd.name in listing.stdout and "completed" in listing.stdout and "val_ppl=" in listing.stdout

def test_failing_notebook(tmp_path):
    nb = toy_notebook(tmp_path/"broken.ipynb", "y = x / 0")
    r = moe_nb("run", nb, "--runs-dir", tmp_path/"runs", "--quiet")
    assert r.returncode == 1
    assert "FAILED in cell 3" in r.stdout and "ZeroDivisionError" in r.stdout
    rd = only_run(tmp_path/"runs", "broken")
    m = json.loads((rd/"metrics.json").read_text())
    assert m["status"] == "failed" and m["error"].startswith("ZeroDivisionError") and m["failed_cell"] == 3
    assert m["failed_cell_source"] == "y = x / 0"
    executed = nbformat.read(rd/"broken.ipynb", as_version=4)
    assert any(o.get("ename") == "ZeroDivisionError" for c in executed.cells if c.cell_type == "code" for o in c.outputs)

@pytest.mark.parametrize("args, msg", [
    (["-p", "stepz", "5"], "unknown parameter 'stepz' for tiny_lm.ipynb; did you mean 'steps'?"),
    (["-p", "steps", "many"], "parameter 'steps' of tiny_lm.ipynb expects int (default 300), got 'many'"),
    (["-p", "lr", "[1, 2]"], "parameter 'lr' of tiny_lm.ipynb expects float"),
    (["--preset", "huge"], "--preset 'huge' is not defined for tiny_lm; known presets: smoke, demo, cpu-long"),
    (["-p", "steps", "5", "-p", "steps", "6"], "-p steps is given twice"),
])
def test_bad_parameters(tmp_path, args, msg):
    r = moe_nb("run", "tiny_lm", *args, "--runs-dir", tmp_path/"runs")
    assert r.returncode == 2 and msg in r.stderr, r.stderr
    assert not (tmp_path/"runs").exists(), "a rejected run must not leave a run directory"

def test_unknown_notebook(tmp_path):
    r = moe_nb("run", "no_such_pipeline", "--runs-dir", tmp_path/"runs")
    assert r.returncode == 2 and "notebook 'no_such_pipeline' not found" in r.stderr and "tiny_lm" in r.stderr

def test_demo(tmp_path):
    """`moe-nb demo` runs the demo list of presets.yaml and prints the summary table. Run here on a one-entry list
    (every demo pipeline is exercised by its own test with a smaller preset; the whole demo takes about 20 minutes)."""
    import shutil
    pipes = tmp_path/"pipelines"; pipes.mkdir()
    for nb in ("tiny_lm", "leaderboard"): shutil.copy(ROOT/"nbs"/"pipelines"/f"{nb}.ipynb", pipes)
    (pipes/"presets.yaml").write_text(yaml.safe_dump({"presets": {"tiny_lm": {"demo": {"steps": 40, "docs_per_domain": 60, "seq_len": 64}},
                                                                  "leaderboard": {"demo": {"tasks": ["hl_halueval"], "limit": 10}}},
                                                      "demo": [{"notebook": "tiny_lm", "preset": "demo"}, {"notebook": "leaderboard", "preset": "demo"}]}))
    r = moe_nb("demo", "--runs-dir", tmp_path/"runs", env={"MOE_NB_PIPELINES": str(pipes)})
    assert r.returncode == 0, r.stdout + r.stderr
    lines, table = r.stdout.split("\n\n")
    line, board = lines.splitlines()
    assert line.startswith("tiny_lm") and " demo " in line and "completed" in line and "val_ppl=" in line
    # the leaderboard ranks the model the demo trained (the other demo models are absent here) and the untrained floor
    assert board.startswith("leaderboard") and "completed" in board and "models=2" in board, board
    assert "pipeline" in table and "tiny_lm" in table and "completed" in table
    lb = json.loads((only_run(tmp_path/"runs", "leaderboard")/"metrics.json").read_text())
    assert lb["failed"] == 0 and (only_run(tmp_path/"runs", "leaderboard")/"leaderboard.png").exists()
    assert (only_run(tmp_path/"runs", "tiny_lm")/"model"/"model.safetensors").exists()
    assert r.stderr == "", r.stderr  # one line per pipeline and the table: nothing else on the console
    m = json.loads((only_run(tmp_path/"runs", "tiny_lm")/"metrics.json").read_text())
    assert m["preset"] == "demo" and m["loss_decreased"]
    # --quick: the smoke preset, or the entry's own `quick`; an entry with neither is refused before anything runs
    (pipes/"presets.yaml").write_text(yaml.safe_dump({"presets": {"tiny_lm": {"demo": {}, "fast": {"steps": 10, "warmup_steps": 2, "docs_per_domain": 30, "seq_len": 32}}},
                                                      "demo": [{"notebook": "tiny_lm", "preset": "demo", "quick": "fast"}]}))
    r = moe_nb("demo", "--quick", "--runs-dir", tmp_path/"quick", env={"MOE_NB_PIPELINES": str(pipes)})
    assert r.returncode == 0 and r.stdout.startswith("tiny_lm") and " fast " in r.stdout.splitlines()[0], r.stdout + r.stderr
    (pipes/"presets.yaml").write_text(yaml.safe_dump({"presets": {"tiny_lm": {"demo": {}}}, "demo": [{"notebook": "tiny_lm", "preset": "demo"}]}))
    r = moe_nb("demo", "--quick", "--runs-dir", tmp_path/"none", env={"MOE_NB_PIPELINES": str(pipes)})
    assert r.returncode == 2 and "has no smoke preset" in r.stderr and not (tmp_path/"none").exists()

def test_quiet_console(tmp_path):
    "A run shows its progress bar and the pipeline's log lines, once; cell output and warnings go to run.log; -v shows all."
    nb = toy_notebook(tmp_path/"chatty.ipynb", "import sys\nfrom moe_nb.core import get_logger\nlog = get_logger('moe_nb.chatty', run_dir)\n"
                      "log.info('step 1 done')\nprint('a cell print')\n"
                      "print('IProgress not found. Please update jupyter and ipywidgets.', file=sys.stderr)")
    r = moe_nb("run", nb, "--runs-dir", tmp_path/"runs")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.count("step 1 done") == 1 and "INFO moe_nb.chatty: step 1 done" in r.stderr
    assert "chatty: " in r.stderr and "cells [" in r.stderr  # the bar: name, cells done, elapsed
    for noise in ("a cell print", "IProgress", "papermill", "Executing notebook"): assert noise not in r.stderr + r.stdout, noise
    assert r.stdout.startswith("run completed in ")
    log = (only_run(tmp_path/"runs", "chatty")/"run.log").read_text()
    assert log.count("step 1 done") == 1 and "a cell print" in log and "IProgress not found" in log
    v = moe_nb("run", nb, "--runs-dir", tmp_path/"v", "-v")
    assert v.returncode == 0 and "a cell print" in v.stderr and "IProgress" in v.stderr and "Executing notebook with kernel" in v.stderr
    assert v.stderr.count("step 1 done") == 1

def test_demo_list_and_presets_are_valid():
    "Every demo entry names a pipeline and one of its presets, and every preset of every pipeline passes the parameter check."
    from moe_nb.cli import demo_entries, find_notebook, load_presets, check_params, notebook_params
    entries = demo_entries()
    assert {"tiny_lm", "nexus", "nexus_domain", "parscale_train", "polychromatic_pretrain", "polychromatic_eval"} <= {e["notebook"] for e in entries}
    for e in entries:
        assert e["preset"] in load_presets(find_notebook(e["notebook"])), e
    for nb in sorted((ROOT/"nbs"/"pipelines").glob("*.ipynb")):
        spec = notebook_params(nb)
        for name, values in load_presets(nb).items():
            check_params(nb, values, spec, where=f"preset {name!r}")

def test_gpu_check_command(tmp_path):
    "Without CUDA every check and benchmark is reported skipped with its reason and the command exits 0; --device cpu runs checks."
    import torch
    runs = tmp_path/"bench"
    if not torch.cuda.is_available():
        r = moe_nb("gpu-check", "--runs-dir", runs)
        assert r.returncode == 0, r.stdout + r.stderr
        rep = json.loads((only_run(runs, "gpu")/"report.json").read_text())
        rows = rep["checks"] + rep["benches"]
        assert {x["status"] for x in rows} == {"skipped"} and all(x["reason"] for x in rows)
        assert {x["check"] for x in rep["checks"]} >= {"flash_varlen", "experts_kernels", "bf16_training", "polyglu_compile", "gpu_clustering"}
        assert {"report.md", "report.png", "metrics.json"} <= {p.name for p in only_run(runs, "gpu").iterdir()}
    # zero2_resume: DeepSpeed ZeRO-2 (a dev dependency) in two processes over gloo, killed at step 5 and resumed
    r = moe_nb("gpu-check", "--device", "cpu", "--no-bench", "--only", "chunked_ce,packed_documents,flash_varlen,zero2_resume", "--runs-dir", tmp_path/"cpu")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((only_run(tmp_path/"cpu", "gpu")/"report.json").read_text())
    checks = {x["check"]: x for x in rep["checks"]}
    assert {n: x["status"] for n, x in checks.items()} == {"chunked_ce": "passed", "packed_documents": "passed", "flash_varlen": "skipped",
                                                          "zero2_resume": "passed"}, rep["checks"]
    assert checks["chunked_ce"]["measured"]["grad_w_float32"] < 1e-5
    z = checks["zero2_resume"]["measured"]
    assert z["processes"] == 2 and z["loss_max_diff"] < 1e-4 and z["grad_norm_max_rel"] < 1e-3 and z["logits_max_diff"] < 1e-3, z
    r = moe_nb("gpu-check", "--only", "nope", "--runs-dir", tmp_path/"bad")
    assert r.returncode == 2 and "unknown name(s) ['nope']" in r.stderr and not (tmp_path/"bad").exists()

def test_check_command(tmp_path):
    "`moe-nb check`: the packages, the devices and a tiny forward of every model kind, on the CPU here."
    r = moe_nb("check", "--device", "cpu", "--json", tmp_path/"env.json")
    assert r.returncode == 0 and "READY" in r.stdout, r.stdout + r.stderr
    rep = json.loads((tmp_path/"env.json").read_text())
    assert [f["model"] for f in rep["forwards"] if f["ok"]] == ["qwen2", "olmoe", "gpt_oss", "select_moe", "nexus", "parscale", "polychromatic"]
    assert rep["devices"][0]["device"] == "cpu" and all(i["ok"] for i in rep["imports"] if i["required"])
