#!/usr/bin/env bash
# The test command: set everything up, lint (ruff check, ruff format --check), then run the whole test
# suite (the real-model tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff check + ruff format --check"
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
