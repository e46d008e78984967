# The two commands: `make demo` (set up, then run the main job) and `make test` (set up, then run the tests).
.PHONY: setup demo test lint
setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/aarm-export demo

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check .
