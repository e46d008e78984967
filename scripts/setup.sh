#!/usr/bin/env bash
# Create .venv and install aarm with its dev extras. Idempotent: re-runs only when pyproject.toml changed.
# torch: where `pip install torch==2.13.0` finds a CPU build (this project's machines keep one on disk) we take
# it first, so the unpinned `torch>=2.4` in pyproject.toml is already satisfied; elsewhere pip picks the
# user's usual torch build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.aarm-installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==2.13.0" || echo "setup: torch 2.13.0 not available here; pip will choose a torch build"
fi
.venv/bin/python -m pip install -q -e ".[dev]"
touch "$stamp"
