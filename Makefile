# The two commands a newcomer runs: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= out/demo
PYTEST_ARGS ?=

.PHONY: demo test lint types unit soak bench postgres-binaries clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Runtime install for the demo; the test install adds the test extras.
$(VENV)/.installed-runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-runtime

# The default scenario, the pilot week (10,000 wallets, 500 merchants, 100,000 payments; about
# 70 s on a 2-core machine) on a fresh SQLite file $(DEMO_DIR)/ledger.sqlite3: issuance
# run, wallets, payments and cheats, then reconciliation and audit; prints where the report is.
# A tenth of it in about 15 s: `.venv/bin/cbdc simulate examples/demo-scenario.toml --seed 42`.
demo: $(VENV)/.installed-runtime
	rm -rf $(DEMO_DIR)
	$(BIN)/cbdc simulate --seed 42 --out $(DEMO_DIR)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check cbdc api tests benchmarks migrations scripts

types: $(VENV)/.installed-test
	$(BIN)/mypy

# The whole suite: lint, types, unit, property, API, SQLite and PostgreSQL integration.
# The tests start (and stop) a throwaway PostgreSQL themselves; if it cannot start they fail.
test: $(VENV)/.installed-test postgres-binaries lint types
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Deeper Hypothesis runs than the bounded CI profile.
soak: $(VENV)/.installed-test postgres-binaries
	HYPOTHESIS_PROFILE=soak $(BIN)/python -m pytest -q tests/property tests/api/test_schemathesis.py $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks

# PostgreSQL 15 server binaries (Debian package postgresql-15), installed when missing and root.
postgres-binaries:
	@bash .ci/ensure-postgres

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache .hypothesis
