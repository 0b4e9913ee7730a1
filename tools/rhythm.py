"""The literate-rhythm figures of issue #19, for the library notebooks (not pipelines or benchmarks).

    python tools/rhythm.py [NBS_DIR]

exported cells: lines per `#| export` cell (the directive line not counted): median, p90, max, how many over 40;
lesson lines per exported line: lines of visible, unexported code cells over exported lines;
exported cells without a lesson: no visible unexported code cell before the next exported cell (or the end), counted
over the cells that define something (a module's import cell is not a definition that could have a lesson);
pipelines: how many restate their parameters as `params = dict(...)`, hand-written checks (`raise`/`assert`/`if ... raise`).
"""
import json, re, statistics, sys
from pathlib import Path

def cells(nb:Path):
    for c in json.loads(nb.read_text())["cells"]:
        if c["cell_type"] == "code": yield "".join(c["source"])

def kind(src:str) -> str:
    first = [l for l in src.splitlines() if l.startswith("#|")]
    if any(re.match(r"#\|\s*export", l) for l in first): return "export"
    if any(re.match(r"#\|\s*(hide|default_exp)", l) for l in first): return "hidden"
    return "lesson" if src.strip() else "empty"

def imports_only(src:str) -> bool:
    code = [l for l in src.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    return bool(code) and all(re.match(r"(from \S+ import |import |\s+\S)", l) for l in code)

def body(src:str) -> int: return len([l for l in src.splitlines() if not l.startswith("#|") and l.strip()])

def figures(root:Path) -> dict:
    nbs = sorted(p for p in root.rglob("*.ipynb") if not ({"pipelines", "bench"} & set(p.relative_to(root).parts)) and p.name != "index.ipynb")
    sizes, lesson_lines, no_lesson, n_exp, n_def = [], 0, 0, 0, 0
    for nb in nbs:
        ks = [(kind(s), body(s), imports_only(s)) for s in cells(nb)]
        for i, (k, n, imp) in enumerate(ks):
            if k == "export":
                sizes.append(n); n_exp += 1
                if imp: continue
                n_def += 1
                nxt = next((j for j in range(i + 1, len(ks)) if ks[j][0] == "export"), len(ks))
                if not any(ks[j][0] == "lesson" for j in range(i + 1, nxt)): no_lesson += 1
            elif k == "lesson": lesson_lines += n
    q = statistics.quantiles(sizes, n=10)
    pipes = sorted((root/"pipelines").glob("*.ipynb"))
    restate = sum(any(re.search(r"^params = dict\(", s, re.M) for s in cells(p)) for p in pipes)
    checks = sum(len(re.findall(r"\b(raise |assert )", s)) for p in pipes for s in cells(p))
    return {"notebooks": len(nbs), "exported_cells": n_exp, "median": statistics.median(sizes), "p90": round(q[-1], 1),
            "max": max(sizes), "over_40": sum(s > 40 for s in sizes),
            "lesson_per_exported_line": round(lesson_lines / sum(sizes), 2), "definition_cells": n_def,
            "no_lesson_pct": round(100 * no_lesson / n_def),
            "pipelines": len(pipes), "pipelines_restating_params": restate, "pipeline_checks": checks}

if __name__ == "__main__":
    print(json.dumps(figures(Path(sys.argv[1] if len(sys.argv) > 1 else "nbs")), indent=1))
