# One gate, the same locally and in CI: `make test` (and `make lint`).
# `make test` and `make demo` install first when needed, so each is one command on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# The FinOps Foundation's FOCUS validator (tests/test_focus_conformance.py) in its own venv: it
# pins numpy/pyarrow/polars/duckdb below gpucost's; only PyPI is used.
FOCUS_VENV ?= .venv-focus

.PHONY: install browser java test test-all lint demo bench bench-quick bench-10k clean docs focus-validator

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

# Apache Spark 4 (the Spark engine's test) needs Java 17: a headless JRE from Debian when the
# machine has no java.
java:
	@command -v java >/dev/null 2>&1 || { \
	    SUDO=""; [ "$$(id -u)" = "0" ] || SUDO="sudo"; \
	    echo "make: installing Debian's openjdk-17-jre-headless for the Spark test"; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }

focus-validator: $(FOCUS_VENV)/.installed

$(FOCUS_VENV)/.installed: tests/focus_validator/requirements.txt tests/focus_validator/patch.py
	$(PYTHON) -m venv $(FOCUS_VENV)
	$(FOCUS_VENV)/bin/pip install --quiet --upgrade pip
	$(FOCUS_VENV)/bin/pip install --quiet --ignore-requires-python -r tests/focus_validator/requirements.txt
	$(FOCUS_VENV)/bin/python tests/focus_validator/patch.py
	touch $@

test: install browser java focus-validator
	$(BIN)/pytest

test-all: install browser java focus-validator
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

# Issue 13's slow benchmark, run on its own (about an hour on two cores; ~30 GB of free disk
# under $$TMPDIR): a full refresh and a nightly build of 10,000 clusters x 365 days.
bench-10k: install
	$(BIN)/python -m bench.build --sizes 10000 --days 365

docs: install
	$(BIN)/python -m pipeline.docgen

clean:
	rm -rf $(VENV) $(FOCUS_VENV) dist build reports/out *.duckdb *.duckdb.wal
