# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test quick lint mutate bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-ray.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The dashboard on http://127.0.0.1:8501 (this machine only; see README to expose it).
run: setup
	$(PY) -m streamlit run app.py --server.address 127.0.0.1

test: setup lint
	$(PY) -m pytest tests -q

# Formatting, import order, unused names and likely bugs (ruff, configured in pyproject.toml).
lint: setup
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

# The suite without its slow tests (real processes, the browser, Ray, long trainings): about 2 minutes.
quick: setup
	$(PY) -m pytest tests -q -m "not slow"

# Do the tests of Alg. 1, the cell space and the validation layer fail when the code is subtly wrong?
# Mutants in a temporary copy, one test process at a time; fails under 90 % killed (README "Mutation testing").
mutate: setup
	$(PY) scripts/mutate.py --fail-under 90

bench: setup
	$(PY) bench/bench_search.py --quick
	$(PY) bench/bench_train.py
	$(PY) bench/bench_fast_score.py --candidates 50 --seeds 1

clean:
	rm -rf $(VENV) .pytest_cache runs
