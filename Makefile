# Two commands do all set-up on a fresh machine:
#   make bench   creates .venv (once), installs stitching, runs the default digits benchmark
#   make test    creates .venv (once), installs stitching (and, as root, Debian's SLURM for the cluster
#                tests), runs the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Where `make bench` writes. The committed reference run lives in results/ (refresh it: make bench RESULTS=results);
# a run into a fresh directory recomputes every cell instead of finding them finished.
RESULTS ?= runs/results
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: bench test lint install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/stitching bench --results $(RESULTS)

test: $(STAMP)
	.ci/setup_slurm.sh
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check stitching tests benchmarks
