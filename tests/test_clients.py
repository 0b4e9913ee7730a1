"""Real clients on saved models: lm-eval's own command line (through `moe-nb lm-eval`, which is lm-eval's parser and run
code in a process where moe_nb's model classes are registered) gives the numbers of the in-process evaluation, for the
three transformers models (`--model hf`) and for PolychromaticLM (`--model moe_nb`); papermill runs a pipeline notebook
directly, without `moe-nb`."""
import json, subprocess, sys
from pathlib import Path
import pytest, torch, yaml

ROOT = Path(__file__).resolve().parent.parent
TASKS = ["moe_nb_heldout", "moe_nb_answers"]

def saved_models(root: Path) -> dict:
    "The four kinds of model moe_nb saves, each with its tokenizer."
    from moe_nb.embedded import get_tokenizer
    from moe_nb.zoo import load_backbone
    from moe_nb.select_moe.model import convert_olmoe_to_select_moe
    from moe_nb.nexus.model import add_shared_experts
    from moe_nb.parscale.model import convert_to_parscale_model
    from moe_nb.polychromatic.model import PolychromaticLM, poly_config, save_polychromatic
    tok = get_tokenizer()
    torch.manual_seed(0)
    models = {"select_moe": convert_olmoe_to_select_moe("tiny-olmoe-random", quality_gate_init_std=0.2),
              "nexus": add_shared_experts(load_backbone("tiny-gpt_oss-random"), "random", scale=0.3),
              "parscale": convert_to_parscale_model(load_backbone("tiny-qwen2-random"), P=2, n_tokens=4)}
    for name, m in models.items():
        m.eval().save_pretrained(root/name); tok.save_pretrained(root/name)
    poly = PolychromaticLM(poly_config("tiny", n_layers=1)).eval()
    save_polychromatic(poly, root/"polychromatic", tok)
    return {**models, "polychromatic": poly}, tok

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from moe_nb.eval import embedded_tasks
    root = tmp_path_factory.mktemp("clients")
    models, tok = saved_models(root)
    return root, models, tok, embedded_tasks(root/"tasks", n=30)

@pytest.mark.parametrize("name", ["select_moe", "nexus", "parscale", "polychromatic"])
def test_lm_eval_command_line_equals_in_process(setup, name):
    from moe_nb.eval import run_lm_eval, MoeNbLM
    root, models, tok, tasks = setup
    m = models[name]
    ours = run_lm_eval(MoeNbLM(m, tok, batch_size=4, max_length=256) if name == "polychromatic" else m, TASKS, tok,
                       task_dirs=[tasks], batch_size=4, max_length=256)["results"]
    kind = "moe_nb" if name == "polychromatic" else "hf"
    out = root/f"out-{name}"
    r = subprocess.run(["moe-nb", "lm-eval", "run", "--model", kind, "--model_args", f"pretrained={root/name},max_length=256",
                        "--tasks", ",".join(TASKS), "--include_path", str(tasks), "--device", "cpu", "--batch_size", "4",
                        "--output_path", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    (f,) = list(out.rglob("results_*.json"))
    theirs = json.loads(f.read_text())["results"]
    for task in TASKS:
        for k, v in ours[task].items():
            if isinstance(v, float) and "stderr" not in k: assert theirs[task][k] == pytest.approx(v, rel=1e-6, abs=1e-9), (task, k)

def test_papermill_runs_a_pipeline_directly(tmp_path):
    "papermill, not moe-nb: the notebook makes its own run directory under ./runs and records its metrics there."
    nb = ROOT/"nbs"/"pipelines"/"tiny_lm.ipynb"
    presets = yaml.safe_load((ROOT/"nbs"/"pipelines"/"presets.yaml").read_text())["presets"]["tiny_lm"]["smoke"]
    args = [a for k, v in {**presets, "tracker": "none"}.items() for a in ("-p", k, str(v))]
    r = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(tmp_path/"out.ipynb"), *args, "--log-level", "WARNING"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    (rd,) = list((tmp_path/"runs"/"tiny_lm").iterdir())
    m = json.loads((rd/"metrics.json").read_text())
    assert m["status"] == "interactive" and m["final_loss"] < m["first_loss"]
    assert yaml.safe_load((rd/"params.yaml").read_text())["steps"] == presets["steps"]
