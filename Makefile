# Two commands for users: `make run` and `make test`. Both set themselves up.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest install clean bench fuzz explore test-faults browser \
	client-package

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The client library too (editable), so the layering check, mypy and tests/clients see it
# under its import name; its own dependencies are a subset of the server's.
$(STAMP): $(BIN)/python pyproject.toml clients/python/pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]' -e ./clients/python
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

test: lint typecheck client-package browser pytest

# The client library installed as a caller installs it: a fresh virtual environment with
# `pip install ./clients/python` (and pytest), none of the server's packages in it, and the
# package's own unit tests run from its directory. Its tests against the real API run in
# `pytest` (tests/clients).
CLIENT_VENV := .venv-client
client-package:
	rm -rf $(CLIENT_VENV)
	$(PYTHON) -m venv $(CLIENT_VENV)
	$(CLIENT_VENV)/bin/pip install --quiet --disable-pip-version-check ./clients/python pytest
	$(CLIENT_VENV)/bin/python -c "import importlib.metadata as m, sys; \
		found = [d.metadata['Name'] for d in m.distributions() \
		         if d.metadata['Name'].lower() in {'temporalio', 'sqlalchemy', 'fastapi'}]; \
		sys.exit(f'server packages in the client environment: {found}' if found else 0)"
	cd clients/python && ../../$(CLIENT_VENV)/bin/pytest -q -p no:cacheprovider tests

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
# The API fuzzer with many examples from a random seed, printed first so a failure can be
# replayed: `make fuzz SEED=...`. `make test` runs a few examples from a fixed seed.
fuzz: install
	@seed=$${SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	echo "fuzz seed $$seed (replay: make fuzz SEED=$$seed)"; \
	SWITCHYARD_FUZZ_SEED=$$seed SWITCHYARD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
		$(BIN)/pytest -q tests/security/test_security_openapi_fuzz.py

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
	rm -rf $(VENV) $(CLIENT_VENV) .pytest_cache .mypy_cache .ruff_cache
