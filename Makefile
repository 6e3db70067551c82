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

# Until the dashboard lands: a training-free search on the bundled sample, from the command line.
run: setup
	$(PY) -m engine search --dataset sample --kernel-set 3x3_5x5 --iterations 200 --profile laptop --seed 0 --json runs/search-3x3_5x5.json

test: setup
	$(PY) -m pytest tests -q

bench: setup
	$(PY) bench/bench_search.py --quick

clean:
	rm -rf $(VENV) .pytest_cache runs
