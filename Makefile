# The two commands: `make demo` (set up, then run the main job) and `make test` (set up, then run the tests).
# `make demo` resumes a demo in aarm-demo/ (finished steps are kept); `make demo FORCE=1` starts it over.
# `make test-fast` skips the tests marked slow (the export matrix) for local iteration; CI runs `make test`.
.PHONY: setup demo test test-fast lint
setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/aarm-export demo $(if $(FORCE),--force)

test: setup
	.venv/bin/python -m pytest -q

test-fast: setup
	.venv/bin/python -m pytest -q -m "not slow"

lint: setup
	.venv/bin/ruff check .
