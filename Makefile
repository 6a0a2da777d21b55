# Two entry points for a fresh Linux machine with Python 3.10+:
#   make demo   - set up .venv and run the main job (bystander demo)
#   make test   - set up .venv and run the test suite (make test-fast: without slow tests)
# CPU torch is installed first so that no multi-GB CUDA build is pulled in.
# Set TORCH_SPEC / PIP_TORCH_ARGS to change it, e.g.
#   make test PIP_TORCH_ARGS="--index-url https://download.pytorch.org/whl/cpu"

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
BIN = $(VENV)/bin
STAMP = $(VENV)/.bystander-installed
TEST_STAMP = $(VENV)/.bystander-test-installed
# Optional extras the test suite exercises (TRL adapter, Ray sweep backend, SuperSuit).
TEST_EXTRAS ?= dev,trl,ray,clients

.PHONY: setup demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e ".[$(TEST_EXTRAS)]"
	touch $(TEST_STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/bystander demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest

test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python experiments/benchmarks/run_all.py --quick

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
