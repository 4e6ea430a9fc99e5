# One gate, the same locally and in CI: `make test` (and `make lint`).
# `make test` and `make demo` install first when needed, so each is one command on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test test-all lint demo bench bench-quick clean docs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(BIN)/pytest

test-all: install
	$(BIN)/pytest -m ''

lint: install
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench
	$(BIN)/mypy pipeline

demo: install
	$(BIN)/gpucost demo

bench: install
	$(BIN)/python -m bench

bench-quick: install
	$(BIN)/python -m bench --quick

docs: install
	$(BIN)/python -m pipeline.docgen

clean:
	rm -rf $(VENV) dist build reports/out *.duckdb *.duckdb.wal
