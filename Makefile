# Every target runs in the project virtual environment (.venv, made by `make install`).
VENV ?= .venv
PY := $(VENV)/bin/python
OUTPUT ?= astro_output
export PATH := $(abspath $(VENV))/bin:$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: install quickstart sample test test-fast bench bench-sweep

install:
	VENV=$(VENV) bash scripts/install.sh

quickstart: install sample

sample:
	$(VENV)/bin/astro-pipeline sweep --sample --output $(OUTPUT)

test:
	VENV=$(VENV) bash scripts/test.sh -q

test-fast:
	VENV=$(VENV) bash scripts/test.sh -q -m "not slow and not browser"

bench:
	$(PY) benchmarks/bench_inference.py

bench-sweep:
	$(PY) benchmarks/bench_sweep.py
