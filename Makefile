# Every command runs from the repository root; DAGSTER_HOME is the repository root, so the
# committed dagster.yaml is the instance config (storage under data/).
export DAGSTER_HOME := $(CURDIR)
VENV := .venv/bin

.PHONY: venv demo test test-fast ui validate bench

venv:
	@bash scripts/bootstrap.sh

demo: venv  ## train the whole graph on the demo dataset (generated on first use)
	$(VENV)/ensemble-assets train

# test: 4 workers on 2 cores fill the time the live instance and the Dagster runs wait; BLAS and OpenMP
# pools stay at one thread so that the workers do not oversubscribe the cores
test: venv  ## the whole test suite (unit, Dagster, end-to-end) on 4 workers (conftest.py: what runs where)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(VENV)/python -m pytest -n 4 --no-loadscope-reorder

test-fast: venv
	$(VENV)/python -m pytest -m "not e2e"

ui: venv  ## webserver + daemon on 127.0.0.1:3000
	$(VENV)/dagster dev -h 127.0.0.1 -p 3000

validate: venv
	$(VENV)/dagster definitions validate

bench: venv
	$(VENV)/python -m benchmarks.instance instance
