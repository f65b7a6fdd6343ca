# The two commands of the README: `make demo` (the main job) and `make test` (the test suite).
# Both run scripts/setup.sh first, which is idempotent. The tests run in one process per core
# (pytest-xdist, at most 4); `make test ARGS="-n 0"` runs them in this one.
.PHONY: setup demo test lint bench docs

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/sparsexbar demo $(ARGS)

test:
	@bash scripts/setup.sh test
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/mypy
	.venv/bin/python -m pytest -q -n auto --maxprocesses 4 $(ARGS)

bench: setup
	.venv/bin/python benchmarks/engine.py $(ARGS)

# The reproduction tables of README.md and docs/reproduce.md, from docs/results/all_reproduce.json.
docs: setup
	.venv/bin/python -m sparsexbar.studies.docs_tables
