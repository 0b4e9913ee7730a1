"The README's two commands are the ones CI runs, and README.md is in sync with nbs/index.ipynb."
import re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def readme_commands():
    text = (ROOT/"README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, flags=re.S)

def test_two_commands():
    demo, tests = readme_commands()
    assert demo.strip().endswith("moe-nb demo") and "pip install torch==2.13.0" in demo
    ci = (ROOT/".ci"/"run").read_text().splitlines()
    assert tests.strip() in [l.strip() for l in ci], f".ci/run does not run the README's test command {tests!r}"
    assert tests.strip().startswith("pip install torch==2.13.0"), "the CPU torch wheel must be installed first"

def test_readme_in_sync_with_index():
    r = subprocess.run([sys.executable, str(ROOT/"tools"/"readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
