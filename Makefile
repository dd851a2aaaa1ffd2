# Two entry points for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# What ruff lints and formats.
LINTED := diagnose tests benchmarks sample_runs
# `make test` also fails on code `ruff format $(LINTED)` would change (FORMAT_CHECK=0 skips that).
FORMAT_CHECK ?= 1

.PHONY: setup demo lint test bench corpus-score bug-suite clean

setup: $(VENV)/.installed

# torch is installed pinned, and only when the interpreter cannot import it:
# an unpinned torch makes pip fetch gigabytes of CUDA packages. A system torch
# is reused through --system-site-packages. Every later install is constrained
# to the torch in place, so no dependency can pull another one.
$(VENV)/.installed: pyproject.toml
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/torch-pin.txt
	$(PY) -m pip install -q -c $(VENV)/torch-pin.txt -e ".[test]"
	touch $@

demo: setup
	$(VENV)/bin/diagnose demo

lint: setup
	$(VENV)/bin/ruff check $(LINTED)
ifeq ($(FORMAT_CHECK),1)
	$(VENV)/bin/ruff format --check $(LINTED)
endif

test: lint
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/analysis_speed.py
	$(PY) benchmarks/distributed_overhead.py
	$(PY) benchmarks/heldout.py

# Recall, false alarms and read failures on the labelled real-log corpora, calibration and held-out halves.
corpus-score: setup
	$(PY) benchmarks/corpus_score.py

# Symptom and root-cause recall, and false alarms on the healthy twins, over the scripts of sample_runs/bugs/.
bug-suite: setup
	$(PY) benchmarks/bug_suite.py

clean:
	rm -rf $(VENV) diagnose-demo
