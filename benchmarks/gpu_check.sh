#!/usr/bin/env bash
# The GPU check, for a CUDA machine lent through the device tool (one call, ~8 minutes):
#   1. the trainer/probe/policy/stale tests with the Trainer on CUDA (tiny random models), and the
#      DeepSpeed ZeRO-2/ZeRO-3 test (one GPU: the sharded LM head gathered for the probe);
#   2. benchmarks/step_speed.py on the shapes of SmolLM2-135M, -360M and -1.7B (random weights: the
#      machine has no model package; timing does not depend on the weights), bf16 mixed precision,
#      16 x 512: full, random, qtuning (probe), auto and stale, each shape its own JSON
#      (benchmarks/results/step_speed_cuda_<shape>.json, copied to $OUT);
#   3. benchmarks/unsloth_smoke.py (Unsloth needs an accelerator): UNSLOTH_RETURN_LOGITS unset, then set,
#      4 steps with QTuningSFTTrainer imported after unsloth ($OUT/unsloth_smoke.json; "skipped" with the
#      reason when the unsloth and unsloth_zoo wheels were not carried in .whl/).
# Needs, carried next to the repository: .whl/ (trl, datasets, dill, multiprocess, transformers,
# peft wheels; deepspeed, hjson, ninja, py-cpuinfo, msgpack, einops for the ZeRO test: build the
# deepspeed wheel with `pip wheel --no-build-isolation --no-deps deepspeed==0.19.8 -w .whl`) and
# .gpu/cache/ (the model's config and tokenizer, the Alpaca demo file).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD QTUNING_CACHE=$PWD/.gpu/cache HF_HUB_OFFLINE=1 \
  TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, trl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)"
timeout 120 python3 -m pytest -q -p no:cacheprovider -W ignore -m "not long" tests/test_trainer.py \
  tests/test_policies.py tests/test_stale.py tests/test_scoring_mode.py tests/test_probe.py 2>&1 | tee "$OUT/pytest.log" | tail -15
timeout 60 python3 -m pytest -q -p no:cacheprovider -W ignore tests/test_distributed.py -k deepspeed 2>&1 \
  | tee "$OUT/deepspeed.log" | tail -5
for shape in 135m 360m 1.7b; do
  timeout 100 python3 benchmarks/step_speed.py --random-init --architecture "$shape" --precision bf16 \
    --methods full random qtuning auto stale --batch 16 --max-length 512 --steps 8 --warmup 2 \
    --results-name "step_speed_cuda_$shape.json" 2>&1 | grep -v -i warn | tee "$OUT/step_speed_$shape.log" | tail -12
  cp "benchmarks/results/step_speed_cuda_$shape.json" "$OUT/" 2>/dev/null
done
timeout 150 python3 benchmarks/unsloth_smoke.py 2>&1 | grep -v -i warn | tee "$OUT/unsloth_smoke.log" | tail -20
