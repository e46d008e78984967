"""Shared pytest setup: the latency-regression plugin (marker `latency`, fixture `latency`).

A conftest here puts tests/ on sys.path, where tests/aarm, tests/export and tests/runtime would shadow the
packages of the same names as namespace packages; the project root goes first so they resolve to the real ones.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)

pytest_plugins = ["runtime.pytest_plugin"]
