# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test lint demo bench soak clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# axe-core, for the browser tests' accessibility checks (the stand-in PSC's packages are
# installed by its own fixture).
tests/browser/node_modules/.installed: tests/browser/package-lock.json
	cd tests/browser && npm ci --no-audit --no-fund --silent
	touch $@

# The suite runs on PostgreSQL when DATABASE_URL is set (as .ci/run does), else on SQLite.
test: install tests/browser/node_modules/.installed
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: install
	deploy/demo/run.sh

# Figures, not a test: see "Speed" in the README.
bench: install
	$(BIN)/python -m tests.bench_verify

# Ten minutes of mixed load on two nodes behind nginx: errors, throughput, worker memory.
soak: install
	$(BIN)/python -m tests.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var
