"Docs: what can be checked without Quarto. nbdev-proc-nbs processes every notebook; every notebook renders to HTML with its figures."
import os, re, shutil, stat, subprocess
from pathlib import Path
import nbformat, pytest
from browser import chrome
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
NBS = sorted(p for p in (ROOT/"nbs").rglob("*.ipynb") if "_proc" not in p.parts and ".ipynb_checkpoints" not in p.parts)

@pytest.fixture(scope="module")
def proc(tmp_path_factory):
    "nbdev-proc-nbs on a copy of the checkout: the notebooks as Quarto would render them."
    # work on a copy so the checkout is untouched; a no-op `quarto` on PATH stops nbdev from trying to download
    # Quarto (it cannot be installed here; users run `nbdev-install-quarto`)
    tmp_path = tmp_path_factory.mktemp("docs")
    for name in ("nbs", "moe_nb"): shutil.copytree(ROOT/name, tmp_path/name, ignore=shutil.ignore_patterns("_proc", "__pycache__"))
    shutil.copy(ROOT/"pyproject.toml", tmp_path)
    bin_ = tmp_path/"bin"; bin_.mkdir(); q = bin_/"quarto"; q.write_text("#!/bin/sh\nexit 0\n"); q.chmod(q.stat().st_mode | stat.S_IEXEC)
    # the copied package, not whichever checkout is installed, is what the processed notebooks import
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(tmp_path)}
    r = subprocess.run(["nbdev-proc-nbs"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return tmp_path/"_proc"

def test_proc_nbs(proc):
    done = {p.relative_to(proc).as_posix() for p in proc.rglob("*.ipynb")}
    assert done == {p.relative_to(ROOT/"nbs").as_posix() for p in NBS}

def test_workflows():
    # nbdev's two workflows: the tests (through .ci/run, the README's command) and the Quarto site
    import yaml
    ci = yaml.safe_load((ROOT/".github/workflows/test.yaml").read_text())
    steps = ci["jobs"]["test"]["steps"]
    assert any("download.pytorch.org/whl/cpu" in s.get("run", "") for s in steps) and steps[-1]["run"] == "bash .ci/run"
    dep = yaml.safe_load((ROOT/".github/workflows/deploy.yaml").read_text())
    assert any(s.get("uses", "").startswith("fastai/workflows/quarto-ghp3") for s in dep["jobs"]["deploy"]["steps"])

@pytest.mark.parametrize("nb_path", NBS, ids=lambda p: p.relative_to(ROOT/"nbs").as_posix())
def test_renders_with_figures(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert "<h1" in html
    n_img = len(re.findall(r'<img [^>]*src="data:image/png;base64,', html))  # image outputs (the page template has a PNG too)
    plots = [c for c in nb.cells if c.cell_type == "code" and ("plt." in c.source or "subplots" in c.source)]
    if plots:  # the saved outputs carry the figures (nbdev-test --save regenerates them)
        assert n_img >= 1, f"{nb_path.name} plots but its saved outputs have no figure"


# ---- the site in a real browser --------------------------------------------------------------------------------------
ERROR_TEXT = re.compile(r"Traceback \(most recent call last\)|^\w*(Error|Exception): ", re.M)

def sidebar_entries() -> list[str]:
    import yaml
    out = []
    def walk(items):
        for it in items:
            if isinstance(it, str): out.append(it)
            elif isinstance(it, dict) and "contents" in it: walk(it["contents"])
            elif isinstance(it, dict) and "href" in it: out.append(it["href"])
    walk(yaml.safe_load((ROOT/"nbs"/"sidebar.yml").read_text())["website"]["sidebar"]["contents"])
    return out

def test_sidebar_lists_every_notebook():
    entries = sidebar_entries()
    assert sorted(entries) == sorted(p.relative_to(ROOT/"nbs").as_posix() for p in NBS), set(entries) ^ {p.relative_to(ROOT/"nbs").as_posix() for p in NBS}
    assert len(entries) == len(set(entries))

def render_site(proc:Path, out:Path) -> list[str]:
    "Each processed notebook as an HTML page with the sidebar of sidebar.yml, the way Quarto lays out the site."
    import yaml
    exporter = HTMLExporter(template_name="lab")
    entries = sidebar_entries()
    nav = "<nav id='sidebar'><ul>" + "".join(f"<li><a href='/{e.removesuffix('.ipynb')}.html'>{e}</a></li>" for e in entries) + "</ul></nav>"
    for e in entries:
        nb = nbformat.read(proc/e, as_version=4)
        for c in nb.cells:  # what nbdev and the executor add beyond the notebook format
            c.pop("has_sd", None); c.metadata.pop("execution", None)
        fm = next((c for c in nb.cells if c.cell_type == "raw" and c.source.startswith("---")), None)
        if fm is not None:  # Quarto's title block, from the front matter nbdev wrote
            meta = yaml.safe_load(fm.source.strip().strip("-")) or {}
            fm.cell_type, fm.source = "markdown", f"# {meta.get('title', e)}\n\n> {meta.get('description', '')}"
            fm.pop("outputs", None); fm.pop("execution_count", None)
        html, _ = exporter.from_notebook_node(nb)
        html = re.sub(r"<script[^>]+src=.https?://[^>]*></script>", "", html)  # no network here: no CDN scripts
        html = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav, html, count=1)
        f = out/(e.removesuffix(".ipynb") + ".html"); f.parent.mkdir(parents=True, exist_ok=True); f.write_text(html)
    return entries

def test_site_in_chromium(proc, tmp_path):
    import functools, http.server, threading
    d = chrome()
    entries = render_site(proc, tmp_path)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    problems = []
    try:
        d.set_page_load_timeout(60)
        for e in entries:
            for attempt in range(3):  # a page the local server dropped is fetched again
                d.get(f"{base}/{e.removesuffix('.ipynb')}.html")
                if d.execute_script("return document.readyState") == "complete" and d.find_elements("css selector", "#sidebar a"): break
            page = d.execute_script("""
                const imgs = [...document.querySelectorAll('.jp-OutputArea-output img')];
                return {h1: document.querySelectorAll('h1').length,
                        imgs: imgs.map(i => [i.complete, i.naturalWidth]),
                        stderr: [...document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')].map(x => x.innerText),
                        nav: [...document.querySelectorAll('#sidebar a')].map(a => a.getAttribute('href'))};""")
            if not page["h1"]: problems.append(f"{e}: no title")
            bad = [w for ok, w in page["imgs"] if not ok or w == 0]
            if bad: problems.append(f"{e}: {len(bad)} of {len(page['imgs'])} figures did not load")
            nb = nbformat.read(ROOT/"nbs"/e, as_version=4)
            if any(c.cell_type == "code" and ("plt." in c.source or "subplots" in c.source) for c in nb.cells) and not page["imgs"]:
                problems.append(f"{e}: plots, but the page shows no figure")
            errs = [t[:200] for t in page["stderr"] if ERROR_TEXT.search(t)]
            if errs: problems.append(f"{e}: error output {errs[0]!r}")
            if sorted(page["nav"]) != sorted(f"/{x.removesuffix('.ipynb')}.html" for x in entries): problems.append(f"{e}: the sidebar does not list every notebook")
        # every sidebar link leads to a page with a title
        d.get(base + "/" + entries[-1].removesuffix(".ipynb") + ".html")
        d.find_element("css selector", "#sidebar a").click()
        assert d.find_elements("css selector", "h1")
    finally:
        d.quit(); srv.shutdown()
    assert not problems, "\n".join(problems)
