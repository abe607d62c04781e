# Quick start: `make demo` (set up + main job on the default data), `make test` (test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-slow test-all study report bench lint format clean

install: $(STAMP)

# Re-runs only when the lock file or pyproject change; otherwise instant.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

demo: install
	$(BIN)/python scripts/sweep.py experiments/pe_extrapolation.py:demo
	$(BIN)/python scripts/report.py experiments/pe_extrapolation.py:demo

# Test processes (pytest-xdist): 2 fits a 2-core machine (the suite is bound by XLA compiling, one thread each);
# TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2

# The default suite (<= 5 minutes on a fresh 2-core clone): contracts, references, tiny end-to-end runs. It is bound
# by XLA compiling tiny models, so it compiles without LLVM's backend optimisations (TEST_XLA_FLAGS= to keep them);
# the slow suite and test-all compile as runs do.
TEST_XLA_FLAGS ?= --xla_backend_optimization_level=0

test: install
	XLA_FLAGS="$$XLA_FLAGS $(TEST_XLA_FLAGS)" $(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS)

# The heavy end-to-end tests: fault injection, several processes and devices, sweeps as subprocesses, the bench.
test-slow: install
	$(BIN)/python -m pytest -q -m slow -n $(TEST_WORKERS)

test-all: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

study: install
	$(BIN)/python scripts/sweep.py experiments/pe_extrapolation.py
	$(BIN)/python scripts/report.py experiments/pe_extrapolation.py

report: install
	$(BIN)/python scripts/report.py experiments/pe_extrapolation.py

bench: install
	$(BIN)/python scripts/bench.py

lint: install
	$(BIN)/ruff check research scripts experiments tests
	$(BIN)/ruff format --check research scripts experiments tests

format: install
	$(BIN)/ruff format research scripts experiments tests
	$(BIN)/ruff check --fix research scripts experiments tests

clean:
	rm -rf $(VENV) runs .pytest_cache
