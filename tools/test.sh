#!/usr/bin/env bash
# All of moe_nb's tests, as CI runs them (the README's test command ends here).
set -euo pipefail
cd "$(dirname "$0")/.."
export MPLBACKEND=Agg PYTHONUNBUFFERED=1

echo "== notebooks and generated modules in sync, notebooks clean"
nbdev-export
nbdev-clean
if [ -d .git ] || git rev-parse --git-dir >/dev/null 2>&1; then
  if [ -n "$(git status --porcelain -- moe_nb nbs)" ]; then
    git status --porcelain -- moe_nb nbs
    git --no-pager diff --stat -- moe_nb nbs
    echo "FAIL: nbdev-export/nbdev-clean changed files: export and clean the notebooks, then commit" >&2
    exit 1
  fi
else
  echo "(not a git checkout: sync check skipped)"
fi

echo "== nbdev-test"
nbdev-test --n-workers 2

echo "== pytest"
# two workers: most tests drive notebooks through papermill, whose kernel start-up and imports are single-threaded;
# worksteal lets the idle worker take over the other's queue, and tests/conftest.py starts the longest set-up first
python -m pytest -q -p no:cacheprovider -n 2 --dist worksteal --durations=15 "$@"
