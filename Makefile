# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# Until the dashboard lands: the SpiKernel methodology on the bundled sample, from the command line.
# A quick run (20 search iterations per kernel set, 100 for the baseline, 2 epochs); rerunning resumes.
run: setup
	$(PY) -m engine explore --dataset sample --kernel-sets 1x1_3x3,3x3_5x5 --iterations 20 \
		--baseline 1x1_3x3_100x --epochs 2 --profile laptop --budget 10M --out runs/quick

test: setup
	$(PY) -m pytest tests -q

bench: setup
	$(PY) bench/bench_search.py --quick
	$(PY) bench/bench_train.py

clean:
	rm -rf $(VENV) .pytest_cache runs
