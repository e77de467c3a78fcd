# The two commands a fresh machine needs (see README); `make lint` is ruff + mypy:
#   make demo   set up .venv and run the embedded digits demo
#   make test   set up .venv, lint, and run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/contribshap demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# Tests run inside a loopback-only network namespace where the machine allows it (tests/isolated.sh).
test: setup lint
	tests/isolated.sh $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache .device .bench-venv-shapiq
