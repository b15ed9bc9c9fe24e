# Two commands for users: `make run` and `make test`. Both set themselves up.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest install clean bench fuzz explore test-faults browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/switchyard migrate
	$(BIN)/switchyard dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy .

# The long fault-injection tests run in `make test-faults` only.
pytest: install
	$(BIN)/pytest -q -m "not faults_long"

test: lint typecheck browser pytest

# The dashboard's browser test (tests/browser) drives Debian's chromium: installed when missing
# (as root); without it that one test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium could not be installed: the browser test will be skipped"

bench: install
	$(BIN)/python -m bench.bench_decide

# schemathesis over the OpenAPI document with many more examples than `make test` runs.
FUZZ_EXAMPLES ?= 300
fuzz: install
	SWITCHYARD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q tests/security/test_security_openapi_fuzz.py

# The property tests (hypothesis) with new examples drawn from a random seed, printed first so
# a failure can be replayed: `make explore SEED=...`. `make test` runs fixed examples.
explore: install
	@seed=$${SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	echo "hypothesis seed $$seed (replay: make explore SEED=$$seed)"; \
	SWITCHYARD_HYPOTHESIS_PROFILE=explore $(BIN)/pytest -q --hypothesis-seed=$$seed \
		tests/routing tests/sim

# Every fault-injection test (docs/RELIABILITY.md); the database outages need
# SWITCHYARD_DATABASE_URL (PostgreSQL). Figures land in test-output/faults/.
FAULTS_REPORT ?= test-output/faults
test-faults: install
	rm -rf $(FAULTS_REPORT)
	SWITCHYARD_FAULTS_REPORT_DIR=$(FAULTS_REPORT) $(BIN)/pytest -q -m faults tests/faults
	$(BIN)/python tests/faults/fault_report.py $(FAULTS_REPORT)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
