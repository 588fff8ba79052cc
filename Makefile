# Two commands do everything on a fresh machine (each creates the virtual environment first):
#   make demo   the embedded demo: SQLite, no servers, the built-in model
#   make test   the whole test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
EXTRAS := worker,discord,slack,postgres,dev

.PHONY: install demo test lint format services bench train-builtin clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: the local CPU wheel (a bare "torch" would pull GBs of CUDA).
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed

demo: install
	rm -rf data/demo imagine-out/demo
	IMAGINE_DATA_DIR=data/demo $(BIN)/imagine-bot console --script demo/demo.imagine --out imagine-out/demo

services:
	bash scripts/services.sh

# The gate CI runs before the tests: lint and format (ruff), types (mypy), layers (import-linter).
lint: install
	$(BIN)/ruff check bot engine bench tests migrations
	$(BIN)/ruff format --check bot engine bench tests migrations
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix bot engine bench tests migrations
	$(BIN)/ruff format bot engine bench tests migrations

test: install
	-@bash scripts/services.sh
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/overhead.py

train-builtin: install
	$(BIN)/imagine-bot train-builtin

clean:
	rm -rf $(VENV) data imagine-out .pytest_cache
