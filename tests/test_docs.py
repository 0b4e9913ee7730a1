"Docs: what can be checked without Quarto. nbdev-proc-nbs processes every notebook; every notebook renders to HTML with its figures."
import os, re, shutil, stat, subprocess
from pathlib import Path
import nbformat, pytest
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
NBS = sorted(p for p in (ROOT/"nbs").rglob("*.ipynb") if "_proc" not in p.parts and ".ipynb_checkpoints" not in p.parts)

def test_proc_nbs(tmp_path):
    # work on a copy so the checkout is untouched; a no-op `quarto` on PATH stops nbdev from trying to download
    # Quarto (it cannot be installed here; users run `nbdev-install-quarto`)
    for name in ("nbs", "moe_nb"): shutil.copytree(ROOT/name, tmp_path/name, ignore=shutil.ignore_patterns("_proc", "__pycache__"))
    shutil.copy(ROOT/"pyproject.toml", tmp_path)
    bin_ = tmp_path/"bin"; bin_.mkdir(); q = bin_/"quarto"; q.write_text("#!/bin/sh\nexit 0\n"); q.chmod(q.stat().st_mode | stat.S_IEXEC)
    # the copied package, not whichever checkout is installed, is what the processed notebooks import
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(tmp_path)}
    r = subprocess.run(["nbdev-proc-nbs"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    done = {p.relative_to(tmp_path/"_proc").as_posix() for p in (tmp_path/"_proc").rglob("*.ipynb")}
    assert done == {p.relative_to(ROOT/"nbs").as_posix() for p in NBS}

@pytest.mark.parametrize("nb_path", NBS, ids=lambda p: p.relative_to(ROOT/"nbs").as_posix())
def test_renders_with_figures(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert "<h1" in html
    n_img = len(re.findall(r'<img [^>]*src="data:image/png;base64,', html))  # image outputs (the page template has a PNG too)
    plots = [c for c in nb.cells if c.cell_type == "code" and ("plt." in c.source or "subplots" in c.source)]
    if plots:  # the saved outputs carry the figures (nbdev-test --save regenerates them)
        assert n_img >= 1, f"{nb_path.name} plots but its saved outputs have no figure"
