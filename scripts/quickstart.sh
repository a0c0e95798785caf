#!/usr/bin/env bash
# The main job: set everything up, then fine-tune SmolLM2-135M-Instruct with LoRA and Q-Tuning
# (25% of samples x 50% of Q2 tokens) on real Alpaca rows: configs/quickstart.yaml.
# Extra arguments override the recipe, e.g. --sample_ratio 0.125 or --resume_from_checkpoint last.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/qtuning train --config configs/quickstart.yaml "$@"
