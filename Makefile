# The two commands of the README. Each creates .venv on first use.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench

demo: $(STAMP)
	$(VENV)/bin/farr demo --out out/demo

test: $(STAMP)
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/simulate_throughput.py
	$(VENV)/bin/python benchmarks/simulate_realism.py
	$(VENV)/bin/python benchmarks/ingest_throughput.py
	$(VENV)/bin/python benchmarks/ingest_fhir.py
	$(VENV)/bin/python benchmarks/model_benchmark.py
	$(VENV)/bin/python benchmarks/record_ceiling.py
	$(VENV)/bin/python benchmarks/sde_load.py
	$(VENV)/bin/python benchmarks/audit_verify.py
	$(VENV)/bin/python benchmarks/synth_throughput.py
	$(VENV)/bin/python benchmarks/synth_report.py
	$(VENV)/bin/python benchmarks/population_benchmark.py
	$(VENV)/bin/python benchmarks/federated_benchmark.py
	$(VENV)/bin/python benchmarks/shapley_benchmark.py

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==2.13.0  # first: the CPU build on local disk, not a CUDA download
	$(VENV)/bin/pip install --quiet -e '.[test]'
	$(VENV)/bin/pip install --quiet --no-deps flwr==1.41.0  # its own pins (typer<0.21, rich<15) would downgrade ours
	touch $(STAMP)
