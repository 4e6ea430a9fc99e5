# One gate, the same locally and in CI: `make test` (and `make lint`).
# `make test` and `make demo` install first when needed, so each is one command on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install browser test test-all lint demo bench bench-quick clean docs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The browser test drives Debian's Chromium (Playwright's own download cannot work here), so the
# test command installs it when the machine has none, as on a fresh machine.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	    SUDO=""; [ "$$(id -u)" = "0" ] || SUDO="sudo"; \
	    echo "make: installing Debian's chromium for the browser test"; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: install browser
	$(BIN)/pytest

test-all: install browser
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
