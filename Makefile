# Quick start: `make quickstart` (install + main job on the built-in sample), then `make test`.
PYTHON ?= python3
OUTPUT ?= astro_output

.PHONY: install quickstart sample test test-fast bench bench-sweep

install:
	bash scripts/install.sh

quickstart: install sample

sample:
	astro-pipeline sweep --sample --output $(OUTPUT)

test:
	$(PYTHON) -m pytest -q

test-fast:
	$(PYTHON) -m pytest -q -m "not slow and not browser"

bench:
	$(PYTHON) benchmarks/bench_inference.py

bench-sweep:
	$(PYTHON) benchmarks/bench_sweep.py
