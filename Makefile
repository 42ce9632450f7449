# cfrbench: the two commands are `make run` (main job) and `make test` (all tests).
# Both run `make setup` first; set-up is idempotent and cheap when already done.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CFRBENCH := $(VENV)/bin/cfrbench
PROFILE ?= quick

.PHONY: setup run test test-unit test-integration lint clean bench-ci

setup:
	@bash scripts/setup.sh

run: setup
	$(CFRBENCH) run --profile $(PROFILE)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -ra tests

test-unit: setup
	$(PY) -m pytest -ra tests/unit

test-integration: setup
	$(PY) -m pytest -ra tests/integration

lint: setup
	$(PY) -m ruff check .

clean:
	@if [ -x $(CFRBENCH) ]; then $(CFRBENCH) clean --all; fi

# CI performance gate: the quick profile, then compare with the committed baseline.
BASELINE ?= ci/baselines/quick
bench-ci: setup
	$(CFRBENCH) run --profile quick --out results/ci-current
	$(CFRBENCH) compare $(BASELINE) results/ci-current
