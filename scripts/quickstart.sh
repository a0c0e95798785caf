#!/usr/bin/env bash
# The main job: set everything up, then score and select real data with the real model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/qtuning plan --model smollm2-135m-instruct --data alpaca-demo --num-samples 128 \
  --batch-size 16 --output outputs/quickstart/plans.json "$@"
