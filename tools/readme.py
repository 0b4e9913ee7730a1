"""Write README.md from nbs/index.ipynb without Quarto (`nbdev-readme` does the same where Quarto is installed).

Markdown cells are copied as they are, code cells become ```python blocks, and plain-text outputs follow them.
`python tools/readme.py --check` exits 1 if README.md is out of date (tests/test_readme.py runs it)."""
import sys
from pathlib import Path
import nbformat

ROOT = Path(__file__).resolve().parent.parent

def render(nb_path=ROOT/"nbs"/"index.ipynb") -> str:
    nb = nbformat.read(nb_path, as_version=4)
    out = ["<!-- generated from nbs/index.ipynb by tools/readme.py (nbdev-readme where Quarto is installed); edit the notebook -->"]
    for c in nb.cells:
        src = c.source.strip()
        if not src or src.startswith("#| hide"): continue
        if c.cell_type == "markdown": out.append(src)
        elif c.cell_type == "code":
            out.append(f"```python\n{src}\n```")
            for o in c.get("outputs", []):
                txt = o.get("text") or o.get("data", {}).get("text/plain")
                if txt: out.append("```\n" + (txt if isinstance(txt, str) else "".join(txt)).rstrip() + "\n```")
    return "\n\n".join(out) + "\n"

if __name__ == "__main__":
    text, readme = render(), ROOT/"README.md"
    if "--check" in sys.argv:
        ok = readme.exists() and readme.read_text() == text
        print("README.md is up to date" if ok else "README.md is out of date: run python tools/readme.py")
        sys.exit(0 if ok else 1)
    readme.write_text(text); print(f"wrote {readme}")
