# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_ENV := DEBUG=1 SEED_KEYRING_FILE=var/demo-keyring.json

.PHONY: install test lint demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The suite runs on PostgreSQL when DATABASE_URL is set (as .ci/run does), else on SQLite.
test: install
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: install
	mkdir -p var
	test -f var/demo-keyring.json || $(DEMO_ENV) $(BIN)/python manage.py seed_key new --file var/demo-keyring.json
	$(DEMO_ENV) $(BIN)/python manage.py migrate --verbosity 0
	$(DEMO_ENV) $(BIN)/python manage.py import_mailboxes deploy/demo/mailboxes.csv
	$(DEMO_ENV) $(BIN)/python manage.py runserver 127.0.0.1:8000

clean:
	rm -rf $(VENV) var
