# steinbench: `make demo` (install + main job) and `make test` (install + test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.stamp-install
export HF_HUB_OFFLINE ?= 1

# pytest-xdist workers for `make test` / `make test-fast`: one per core; each test file runs whole
# on one worker (--dist loadfile), so a module's model folders are built once, and each worker
# caps torch at its share of the cores (tests/conftest.py). Files go out in collection order
# (--no-loadscope-reorder; xdist's default order, most tests first, sent the long end-to-end
# files last), which tests/conftest.py sets to the longest files first.
TEST_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PYTEST_PAR := -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder

.PHONY: install demo test test-fast perf lint format clean scale-check

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch/torchvision first (pinned, from the machine's local wheels), then the project.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install -e ".[dev,ray]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m benchmark run --methods sds,vsd,ssd --prompts prompts/objects.txt --out runs
	@echo "results are in runs/ (newest folder): report.html, config.yaml, manifest.json, metrics.parquet, snapshots/"

# --durations: the 25 slowest tests are listed at the end, so every CI log shows where the time goes
test: install
	$(PY) -m pytest -q tests --benchmark-disable $(PYTEST_PAR) --durations=25
	$(PY) -m pytest -q --nbmake --nbmake-timeout=900 notebooks
	$(PY) -m benchmark regress --golden tests/golden/variance.json

test-fast: install
	$(PY) -m pytest -q tests -m "not slow" --benchmark-disable $(PYTEST_PAR)

# Full-size SD 2.1-base + DPT-hybrid + TAESD (random weights, built once into SCALE_DIR, 2.6 GB):
# 2 steps each of sds, vsd, ssd, one process per cell; s/step, x SDS and peak RSS as a table
# and scale_check.json (docs/scale.md). Needs ~13 GB free memory; ~15 min on 2 CPU threads.
SCALE_DIR ?= $(HOME)/.cache/steinbench/full-size
scale-check: install
	$(PY) -m benchmark.checks.scale_check --dir $(SCALE_DIR) --steps 2 --threads 2 --out scale_check.json

perf: install
	$(PY) -m pytest -q tests/perf --benchmark-only --benchmark-columns=min,median,max,rounds

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks
