#!/usr/bin/env python
"""Round-trip a notebook through a percent script that keeps cell ids, so outputs of unchanged cells survive.
  nbpy.py out NB.ipynb [PY]   -> writes PY (default /tmp/nbpy/<name>.py)
  nbpy.py in PY NB.ipynb      -> rebuilds NB from PY; unchanged code cells keep outputs/metadata
Markers: '# %% id=XXX' code, '# %% [md] id=XXX' markdown; a marker without id is a new cell."""
import sys, json, re, uuid
from pathlib import Path
def out(nbp, pyp=None):
    nb = json.loads(Path(nbp).read_text()); pyp = Path(pyp or f"/tmp/nbpy/{Path(nbp).stem}.py"); pyp.parent.mkdir(exist_ok=True, parents=True)
    L = []
    for c in nb["cells"]:
        s = "".join(c["source"]); cid = c.get("id", "")
        if c["cell_type"] == "markdown": L.append(f"# %% [md] id={cid}"); L += [("# " + l) if l else "#" for l in s.splitlines()]
        else: L.append(f"# %% id={cid}"); L += s.splitlines()
    pyp.write_text("\n".join(L) + "\n"); print(pyp)
def inn(pyp, nbp):
    nbp = Path(nbp); old = json.loads(nbp.read_text()) if nbp.exists() else {"cells": [], "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}
    byid = {c.get("id"): c for c in old["cells"]}
    cells, cur, hdr = [], [], None
    def flush():
        if hdr is None: return
        md = "[md]" in hdr; m = re.search(r"id=(\S+)", hdr); cid = m.group(1) if m else None
        text = "\n".join(cur).strip("\n")
        if md: text = "\n".join(l[2:] if l.startswith("# ") else ("" if l == "#" else l) for l in text.splitlines())
        src = [l + "\n" for l in text.split("\n")]; src[-1] = src[-1].rstrip("\n")
        if text == "": src = []
        prev = byid.get(cid)
        if cid in seen or prev is None: cid = uuid.uuid4().hex[:8]; prev = None
        seen.add(cid)
        if prev is not None and "".join(prev["source"]).strip("\n") == text.strip("\n"): src = prev["source"]  # unchanged: as it was
        if md: c = {"cell_type": "markdown", "id": cid, "metadata": {}, "source": src}
        else:
            keep = prev is not None and prev["cell_type"] == "code" and "".join(prev["source"]) == text
            meta = prev["metadata"] if prev is not None and prev["cell_type"] == "code" else {}  # tags (parameters) survive edits
            c = {"cell_type": "code", "execution_count": None, "id": cid, "metadata": meta, "outputs": prev["outputs"] if keep else [], "source": src}
        cells.append(c)
    seen = set()
    for line in Path(pyp).read_text().splitlines():
        if line.startswith("# %%"): flush(); cur = []; hdr = line
        else: cur.append(line)
    flush()
    old["cells"] = cells; nbp.write_text(json.dumps(old, indent=1, ensure_ascii=False) + "\n")
if __name__ == "__main__":
    if sys.argv[1] == "out": out(*sys.argv[2:])
    else: inn(*sys.argv[2:])
