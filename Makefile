# Every command runs from the repository root; DAGSTER_HOME is the repository root, so the
# committed dagster.yaml is the instance config (storage under data/).
export DAGSTER_HOME := $(CURDIR)
VENV := .venv/bin

.PHONY: venv demo test test-fast ui validate bench

venv:
	@bash scripts/bootstrap.sh

demo: venv  ## train the whole graph on the demo dataset (generated on first use)
	$(VENV)/ensemble-assets train

test: venv  ## the whole test suite (unit, Dagster, end-to-end), one worker per core, a module per worker
	$(VENV)/python -m pytest -n 2 --dist loadfile

test-fast: venv
	$(VENV)/python -m pytest -m "not e2e"

ui: venv  ## webserver + daemon on 127.0.0.1:3000
	$(VENV)/dagster dev -h 127.0.0.1 -p 3000

validate: venv
	$(VENV)/dagster definitions validate

bench: venv
	$(VENV)/python -m benchmarks.instance instance
