#!/usr/bin/env bash
# The main job: set everything up, then fine-tune SmolLM2-135M-Instruct with LoRA and Q-Tuning
# (25% of samples x 50% of Q2 tokens) on real Alpaca rows: configs/quickstart.yaml.
# Extra arguments override the recipe, e.g. --sample_ratio 0.125 or --resume_from_checkpoint last.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# DeepSpeed (installed by the set-up, unused here) logs a WARNING on import when it finds no GPU and
# falls back to its CPU accelerator; on a machine without CUDA, name that accelerator so it need not guess.
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}
fi
exec .venv/bin/qtuning train --config configs/quickstart.yaml "$@"
