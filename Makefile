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
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -ra tests

test-unit: setup
	$(PY) -m pytest -ra tests/unit

test-integration: setup
	$(PY) -m pytest -ra tests/integration

lint: setup
	$(PY) -m ruff check .

clean:
	@if [ -x $(CFRBENCH) ]; then $(CFRBENCH) clean --all; fi

# CI performance gate: the quick profile into a run directory of its own, then the gate
# against the committed baseline (ci/README.md). CI_OUT defaults to a new directory per
# invocation (UTC time + random suffix, fixed once per make), so a second run never meets the
# first's records; CI passes results/ci-<run id>-<attempt>. GATE_MARKDOWN=F appends the
# verdict table to F (e.g. $GITHUB_STEP_SUMMARY); the rows as JSON go to CI_OUT/gate.json.
BASELINE ?= ci/baselines/quick
ifndef CI_OUT
CI_OUT := results/ci-$(shell date -u +%Y%m%dT%H%M%SZ)-$(shell od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
endif
GATE_MARKDOWN ?=
bench-ci: setup
	$(CFRBENCH) run --profile quick --out $(CI_OUT)
	$(CFRBENCH) compare $(BASELINE) $(CI_OUT) --json $(CI_OUT)/gate.json \
		$(if $(GATE_MARKDOWN),--markdown $(GATE_MARKDOWN))
