"""The two configs of a fine-tuning run: `QTuningSFTConfig` (the trainer's) and `RunConfig` (the run's).

- `QTuningSFTConfig`: TRL's SFTConfig + `QTuningTrainingConfig` (the Q-Tuning engine's settings + how
  Q-Tuning runs inside a trainer, qtuning.engine.training_config); what `QTuningSFTTrainer(args=...)` reads.
  Its Q-Tuning fields are inherited, not repeated; the module imports trl (the `trl` extra).
- `RunConfig`: what `qtuning train` (`run.build_trainer`) loads around the trainer: the model, the
  data and its held-out split, LoRA. The trainer never reads these, so they are not its fields.

`qtuning train --help`, YAML recipes and Python agree: a recipe's keys and the --flags are the
fields of both, and every field's `help` metadata is its documentation. `train_configs(settings)`
splits one flat dict of settings (a recipe) into the two.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..engine.training_config import (  # noqa: F401  (PRUNING_METHODS ... cpu_has_native_bf16: their old home)
    PROBE_PRECISIONS,
    PRUNING_METHODS,
    SCORING_MODES,
    QTuningTrainingConfig,
    cpu_has_native_bf16,
    resolved_probe_batch_size,
    resolved_probe_precision,
)
from ..errors import ConfigError
from ..extras import missing_extra

try:
    from trl import SFTConfig
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "trl", "QTuningSFTConfig (and QTuningSFTTrainer, `qtuning train`)") from None

# transformers 5.24 renamed TrainingArguments.gradient_checkpointing to activation_checkpointing
_ACTIVATION_CHECKPOINTING = "activation_checkpointing" in {f.name for f in dataclasses.fields(SFTConfig)}


@dataclass
class RunConfig:
    """What `qtuning train` loads around the trainer: the model, the data, the held-out split, LoRA.

    Built with keyword arguments, one per field (`RunConfig(model="smollm2-135m-instruct", lora_r=8)`),
    or from a recipe with `train_configs`. Each field's `help` metadata says what it does and what it
    allows (docs/configuration.md lists them all). The trainer never reads these.

    Raises:
        ConfigError: At construction, eval_fraction is not in [0, 1).
    """

    _argument_group_name = "RunConfig: what `qtuning train` loads around the trainer (model, data, LoRA)"

    # --- what to train on
    model: str = field(
        default="smollm2-135m-instruct",
        metadata={
            "help": "Model: the built-in name 'smollm2-135m-instruct', a .gguf file, a local Hugging Face "
            "folder or a hub id."
        },
    )
    data: str = field(
        default="alpaca-demo",
        metadata={
            "help": "Training data: a built-in name (alpaca-demo, gsm8k, arc-easy, ...), a JSON/JSONL/Parquet "
            "file or a datasets save_to_disk folder."
        },
    )
    eval_data: str | None = field(
        default=None,
        metadata={"help": "Held-out data, same forms as `data`. Default: `eval_fraction` of `data`, never trained on."},
    )
    eval_fraction: float = field(
        default=0.05, metadata={"help": "Share of `data` held out for the before/after loss when eval_data is unset."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many training rows (after shuffling with `seed`)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many held-out rows."})
    # --- LoRA
    lora_r: int = field(default=8, metadata={"help": "LoRA rank; 0 trains all the weights."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default="all-linear", metadata={"help": "LoRA target modules: 'all-linear' or a comma-separated list."}
    )
    # --- the output folder (transformers 5 dropped TrainingArguments' own field of this name)
    if "overwrite_output_dir" not in {f.name for f in dataclasses.fields(SFTConfig)}:
        overwrite_output_dir: bool = field(
            default=False,
            metadata={
                "help": "Start over in an output_dir that holds another run (a different recipe in its "
                "qtuning_run.json): its checkpoints and plan logs are removed. Without it, such an output_dir "
                "is refused unless the run resumes (resume_from_checkpoint)."
            },
        )

    def __post_init__(self) -> None:
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"eval_fraction={self.eval_fraction!r} is not allowed: expected a number in [0, 1)")


@dataclass
class QTuningSFTConfig(SFTConfig, QTuningTrainingConfig):
    """Settings of a Q-Tuning fine-tuning run (TRL SFTConfig fields are accepted too).

    TRL's SFTConfig + `QTuningTrainingConfig`: built with keyword arguments, one per field of either
    (`QTuningSFTConfig(output_dir="out", sample_ratio=0.25, token_ratio=0.5)`), and passed to
    `QTuningSFTTrainer` as `args`. Each field's `help` metadata says what it does and what it allows
    (docs/configuration.md lists them all). Defaults that differ from TRL's: bf16 None is on where a
    CUDA device supports it, off elsewhere; gradient (activation) checkpointing is off. At
    construction, a run launched by torchrun on a machine without an accelerator trains on the CPU
    (use_cpu, a gloo process group with ddp_timeout), and memory pinning is off without an accelerator.

    Raises:
        ConfigError: At construction, a Q-Tuning field or combination is not allowed
            (`QTuningTrainingConfig`), packing with a packing_strategy other than "bfd", or
            padding_free/packing with scoring="reuse" or "auto".
        ValueError: A TRL or transformers field is not allowed (SFTConfig's own checks).
    """

    _argument_group_name = "QTuningSFTConfig: the trainer's settings (Q-Tuning's, then TRL's SFTConfig's)"

    # The Q-Tuning fields come from QTuningTrainingConfig. TRL defaults that do not suit a small-model or
    # CPU run; same meaning as in SFTConfig.
    if _ACTIVATION_CHECKPOINTING:
        # transformers >= 5.24 renamed gradient_checkpointing to activation_checkpointing (the old name, a
        # deprecated alias, warns when set): the old one stays unset, the new one defaults to off
        activation_checkpointing: bool | None = field(
            default=None,
            metadata={
                "help": "Recompute activations in backward to save memory (slower). Default: off.",
                "nargs": "?",
                "const": True,
            },
        )
        gradient_checkpointing: bool | None = field(
            default=None,
            metadata={
                "help": "Deprecated alias of activation_checkpointing (transformers warns when it is set).",
                "nargs": "?",
                "const": True,
            },
        )
    else:
        gradient_checkpointing: bool = field(
            default=False, metadata={"help": "Recompute activations in backward to save memory (slower)."}
        )
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 mixed precision. Default: on where a CUDA device supports it, off elsewhere."},
    )

    def __post_init__(self) -> None:
        import os

        import torch

        if self.bf16 is None:
            self.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        # Launched with torchrun on a machine without an accelerator: distributed CPU training (gloo),
        # which TrainingArguments only sets up when told use_cpu.
        accelerator = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
        # (DeepSpeed sets up its own process group, on its CPU accelerator with gloo.)
        if not accelerator and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not self.deepspeed:
            self.use_cpu = True
        if self.use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not self.deepspeed:
            _init_cpu_process_group(self.ddp_timeout, self.ddp_backend)
        if not torch.accelerator.is_available():
            self.dataloader_pin_memory = False  # nothing to pin for (torch warns at every DataLoader otherwise)
        SFTConfig.__post_init__(self)  # (TrainingArguments' __post_init__ does not call super's)
        QTuningTrainingConfig.__post_init__(self)
        if self.packing and self.packing_strategy != "bfd":
            raise ConfigError(
                f"packing_strategy={self.packing_strategy!r} is not supported: Q-Tuning scores, keeps or drops whole "
                "samples, and this strategy cuts samples into pieces (bfd_split) or across their boundaries "
                "(wrapped). Use packing_strategy: bfd (whole samples, best-fit packed) or padding_free: true."
            )
        if (self.padding_free or self.packing) and self.scoring in ("reuse", "auto"):
            name = "packing" if self.packing else "padding_free"
            raise ConfigError(
                f"{name}=True is not allowed with scoring={self.scoring!r}: packed and padding-free batches are scored "
                "by the probe (scoring: probe or stale)"
            )

    def resolved_probe_precision(self) -> str:
        """'bf16' or 'same': what probe_precision means on this machine."""
        return resolved_probe_precision(self.probe_precision, self.device)

    def resolved_probe_batch_size(self) -> int:
        """probe_batch_size with -1 (auto) resolved for this device."""
        return resolved_probe_batch_size(self.probe_batch_size, self.device)


def train_configs(settings: dict) -> tuple[RunConfig, QTuningSFTConfig]:
    """One flat dict of settings (a recipe, with any overrides) as (RunConfig, QTuningSFTConfig).

    Args:
        settings: Field name -> value, the fields of both configs mixed.

    Returns:
        (RunConfig of its RunConfig fields, QTuningSFTConfig of the rest).

    Raises:
        TypeError: A key is a field of neither config.
        ConfigError: A value is not allowed (the configs' own checks).
    """
    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    run = RunConfig(**{k: v for k, v in settings.items() if k in run_fields})
    return run, QTuningSFTConfig(**{k: v for k, v in settings.items() if k not in run_fields})


def _init_cpu_process_group(timeout_s: int, backend: str | None) -> None:
    """The gloo process group of a distributed CPU run, with ddp_timeout as its timeout.

    With use_cpu, TrainingArguments (transformers 5.x) asks accelerate for the group without the timeout,
    so a rank that hung would hold the others for torch's default 30 minutes whatever ddp_timeout says.
    accelerate keeps a group that is already there.
    """
    from datetime import timedelta

    import torch.distributed as dist

    if backend not in (None, "gloo") or not dist.is_available() or dist.is_initialized():
        return
    dist.init_process_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
