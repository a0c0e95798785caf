"""Q-Tuning inside other fine-tuning frameworks, switched on from their own YAML.

- `qtuning.integrations.axolotl`: `plugins: [qtuning.integrations.axolotl.QTuningPlugin]` and
  `qtuning_<field>` keys in an Axolotl config (tested with Axolotl 0.19.0).
- `qtuning.integrations.llamafactory`: `qtuning llamafactory train.yaml`, LLaMA-Factory's YAML with one
  added `qtuning:` block (tested with LLaMA-Factory 0.9.5).

Each module imports its framework only when used; this package imports nothing.
"""
