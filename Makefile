# Task runner. Each target is one documented command (CONTRIBUTING.md); run from the repository root.
PYTHON ?= .venv/bin/python
RUFF ?= .venv/bin/ruff

.PHONY: setup style quality test test-fast

setup:  # .venv, torch, qtuning[all,dev] at constraints.txt, the real model and data (idempotent)
	bash scripts/setup.sh

style:  # rewrite: format, then the lint fixes ruff can make
	$(RUFF) format .
	$(RUFF) check --fix .

quality:  # check only (what scripts/test.sh runs before the tests)
	$(RUFF) check .
	$(RUFF) format --check .

test:  # what CI runs: set-up, lint, the whole suite, then the fast tests at the oldest versions
	bash scripts/test.sh

test-fast:  # the fast loop: no subprocess, no training run, no real model
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PYTHON) -m pytest -m "not slow and not real_model" -q
