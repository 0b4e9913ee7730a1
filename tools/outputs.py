#!/usr/bin/env python
"""Give a pipeline notebook the outputs of an executed run of it, so the docs show a real run's tables and figures.
  outputs.py RUN/PIPELINE.ipynb nbs/pipelines/PIPELINE.ipynb
Each code cell whose source is the same in both takes the run's outputs (stderr streams dropped: progress bars and
warnings); cells that differ keep theirs, and the count of each is printed. Papermill's injected-parameters cell is
not copied. Run it on a run of the notebook as it is now."""
import sys, json
from pathlib import Path

def transplant(run_nb, pipe_nb) -> tuple[int, int]:
    run, pipe = json.loads(Path(run_nb).read_text()), json.loads(Path(pipe_nb).read_text())
    by_src = {"".join(c["source"]): c for c in run["cells"] if c["cell_type"] == "code"
              and "injected-parameters" not in c.get("metadata", {}).get("tags", [])}
    took = missed = 0
    for c in pipe["cells"]:
        if c["cell_type"] != "code": continue
        r = by_src.get("".join(c["source"]))
        if r is None: missed += 1; continue
        c["outputs"] = [o for o in r.get("outputs", []) if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
        for o in c["outputs"]:
            if "execution_count" in o: o["execution_count"] = None
        c["execution_count"] = None; took += 1
    Path(pipe_nb).write_text(json.dumps(pipe, indent=1, ensure_ascii=False) + "\n")
    return took, missed

if __name__ == "__main__":
    took, missed = transplant(*sys.argv[1:3])
    print(f"{took} code cells took the run's outputs; {missed} differ from the run and kept their own")
