"""The house rules, read off the import graph of the installed package.

1. The substrate (core, data, embedded, tokens, hooks, engine, jobs, eval, zoo, runs, cli) never imports a system.
2. Systems (select_moe, nexus, polychromatic, parscale, leaderboard) do not import each other.
3. Model code does not import the training engine, directly or through what it imports.

Imports are read from the source with `ast`, function-level imports and relative imports included, so a lazy import
inside a function counts as much as one at the top of the module.
"""
import ast, json, subprocess, sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import moe_nb

ROOT = Path(moe_nb.__file__).parent
SUBSTRATE = {"core", "data", "embedded", "tokens", "hooks", "engine", "jobs", "eval", "zoo", "runs", "cli"}
SYSTEMS = {"select_moe", "nexus", "polychromatic", "parscale", "leaderboard"}
CROSS = {"gpu"}  # checks that span every system: may import each system; only the CLI's command imports them
MODEL_MODULES = ["moe_nb.select_moe.losses", "moe_nb.select_moe.model", "moe_nb.nexus.model", "moe_nb.polychromatic.polyglu",
                 "moe_nb.polychromatic.model", "moe_nb.parscale.model"]


def modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        rel = p.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        if not name.endswith("_modidx"): out[name] = p
    return out


def imported(name: str, path: Path) -> set[str]:
    "Every moe_nb module `name` imports, anywhere in its source."
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("moe_nb")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else: mod = node.module or ""
            if not mod.startswith("moe_nb"): continue
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODS}  # `from moe_nb.x import submodule`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("moe_nb."):
            found.add(node.value.split(":")[0])  # "module:function" targets and importlib names count too
    return {m for m in found if m != name}


MODS = modules()
GRAPH = {m: imported(m, p) for m, p in MODS.items()}


def part(mod: str) -> str:
    "The substrate module or the system a module belongs to."
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "moe_nb"


def test_every_module_has_a_place():
    # a new flat module must be declared substrate, or live in a system's subpackage
    assert {part(m) for m in MODS} - {"moe_nb"} <= SUBSTRATE | SYSTEMS | CROSS, sorted({part(m) for m in MODS} - SUBSTRATE - SYSTEMS - CROSS)
    assert SUBSTRATE | SYSTEMS | CROSS <= {part(m) for m in MODS}


def test_cross_system_modules_are_leaves():
    "Nothing but the CLI imports a cross-system module, so no system and no other substrate module depends on every system."
    bad = {m: sorted(i for i in GRAPH[m] if part(i) in CROSS) for m in MODS if part(m) not in CROSS and m != "moe_nb.cli"}
    assert not {m: v for m, v in bad.items() if v}, bad


def test_substrate_never_imports_a_system():
    bad = {m: sorted(i for i in GRAPH[m] if part(i) in SYSTEMS) for m in MODS if part(m) in SUBSTRATE}
    assert not {m: v for m, v in bad.items() if v}, bad


def test_systems_do_not_import_each_other():
    bad = {m: sorted(i for i in GRAPH[m] if part(i) in SYSTEMS and part(i) != part(m)) for m in MODS if part(m) in SYSTEMS}
    assert not {m: v for m, v in bad.items() if v}, bad


def test_model_code_does_not_import_the_engine():
    for m in MODEL_MODULES:
        assert "moe_nb.engine" not in GRAPH[m], m
    # and not through what it imports, at import time: checked in a fresh interpreter
    code = ("import sys, json; import " + ", ".join(MODEL_MODULES) +
            "; print(json.dumps(sorted(k for k in sys.modules if k.startswith('moe_nb'))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert "moe_nb.engine" not in loaded and "moe_nb.zoo" not in loaded, loaded
    assert set(MODEL_MODULES) <= set(loaded)


def test_the_checker_sees_violations(tmp_path):
    # the graph reader catches relative, lazy and string imports
    f = tmp_path/"m.py"
    f.write_text("from ..select_moe import model\ndef g():\n    from moe_nb.nexus.model import x\nT = 'moe_nb.parscale.model:f'\n")
    got = imported("moe_nb.x.demo", f)
    assert {"moe_nb.select_moe", "moe_nb.select_moe.model", "moe_nb.nexus.model", "moe_nb.parscale.model"} <= got, got


def test_systems_are_installed_entry_points():
    eps = {e.name: e.value for e in entry_points(group="moe_nb.systems")}
    assert set(eps) == SYSTEMS - {"leaderboard"}, eps  # the systems with models to register (the leaderboard has none)
    assert all(v.startswith(f"moe_nb.{k}.") for k, v in eps.items())
    pipes = {e.name: e.value for e in entry_points(group="moe_nb.pipelines")}
    assert pipes == {s: f"moe_nb.{s}.pipelines" for s in SYSTEMS}, pipes


@pytest.mark.parametrize("nb_dir", sorted(SYSTEMS))
def test_each_system_has_its_notebooks(nb_dir):
    nbs = Path(__file__).parents[1]/"nbs"/nb_dir
    exp = {json.loads(p.read_text())["cells"][0]["source"][0].split()[-1] for p in nbs.glob("*.ipynb")}
    data = lambda m: ".task_data" in m  # the loaders the leaderboard's task files name (written by leaderboard.tasks)
    assert exp == {m.removeprefix("moe_nb.") for m in MODS if part(m) == nb_dir and m != f"moe_nb.{nb_dir}" and not data(m)}, exp


# ---- thin pipelines ----------------------------------------------------------------------------------------------------
PIPELINES = sorted((Path(__file__).parents[1]/"nbs"/"pipelines").glob("*.ipynb"))

@pytest.mark.parametrize("nb", PIPELINES, ids=lambda p: p.stem)
def test_pipeline_parameters_written_once(nb):
    "A pipeline turns its parameters cell into its package dataclass in one line, never restating them."
    import importlib, re
    from moe_nb.cli import notebook_params
    code = [("".join(c["source"]), c.get("metadata", {}).get("tags", [])) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    body = "\n".join(s for s, tags in code if "parameters" not in tags)
    m = re.search(r"^p = (\w+)\.from_notebook\(globals\(\)\)$", body, re.M)
    assert m, f"{nb.name}: no `p = <Params>.from_notebook(globals())`"
    assert not re.search(r"^params = dict\(", body, re.M) and "open_run(" not in body, nb.name
    cls = next(getattr(importlib.import_module(mod), m.group(1)) for mod in ["moe_nb.runs", *(f"moe_nb.{s}.pipelines" for s in sorted(SYSTEMS))]
               if hasattr(importlib.import_module(mod), m.group(1)))
    spec = notebook_params(nb)
    assert cls.PIPELINE == nb.stem and set(cls.fields()) == set(spec)
    p = cls.from_notebook({k: v["default"] for k, v in spec.items()})  # the notebook's own defaults pass the checks
    assert set(p.params()) == set(spec) - {"run_dir"}
