#!/usr/bin/env bash
# The test command: set everything up, lint (ruff check, ruff format --check), run the whole test suite
# (the real-model tests and the Axolotl / LLaMA-Factory runs included: tests/test_frameworks.py builds their
# cached environments), then the fast tests again at the oldest supported versions (scripts/test_oldest.sh).
# With arguments (bash scripts/test.sh -k trainer) only the main suite runs, with those arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff check + ruff format --check"
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ $# -eq 0 ]; then
  echo "[test] the fast tests at the oldest supported versions (scripts/test_oldest.sh)"
  bash scripts/test_oldest.sh -q || status=$?
fi
exit "$status"
