# Two commands matter: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint bench golden clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	@touch $@

$(TEST_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

demo: $(STAMP)
	$(BIN)/pipeline check
	$(BIN)/pipeline preview

test: $(TEST_STAMP)
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/python -m pytest

golden: $(TEST_STAMP)
	$(BIN)/python -m pytest --update-golden tests

bench: $(STAMP)
	$(BIN)/python bench/render.py

clean:
	rm -rf $(VENV) out state .pytest_cache
