"""The two configs of a fine-tuning run: `QTuningSFTConfig` (the trainer's) and `RunConfig` (the run's).

- `QTuningSFTConfig`: TRL's SFTConfig + the Q-Tuning engine's settings + how Q-Tuning runs inside
  the trainer; what `QTuningSFTTrainer(args=...)` reads. The engine's fields are inherited from
  `QTuningConfig`, not repeated.
- `RunConfig`: what `qtuning train` (`run.build_trainer`) loads around the trainer: the model, the
  data and its held-out split, LoRA. The trainer never reads these, so they are not its fields.

`qtuning train --help`, YAML recipes and Python agree: a recipe's keys and the --flags are the
fields of both, and every field's `help` metadata is its documentation. `train_configs(settings)`
splits one flat dict of settings (a recipe) into the two.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from trl import SFTConfig

from .config import SELECTION_POOLS, ConfigError, QTuningConfig, _check_choice

PRUNING_METHODS = ("qtuning", "none")
SCORING_MODES = ("probe", "reuse", "auto", "stale")
PROBE_PRECISIONS = ("auto", "same", "bf16")


@dataclass
class RunConfig:
    """What `qtuning train` loads around the trainer: the model, the data, the held-out split, LoRA."""

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

    def __post_init__(self) -> None:
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"eval_fraction={self.eval_fraction!r} is not allowed: expected a number in [0, 1)")


@dataclass
class QTuningSFTConfig(SFTConfig, QTuningConfig):
    """Settings of a Q-Tuning fine-tuning run (TRL SFTConfig fields are accepted too)."""

    _argument_group_name = "QTuningSFTConfig: the trainer's settings (Q-Tuning's, then TRL's SFTConfig's)"

    # --- how Q-Tuning runs inside the trainer
    pruning_method: str = field(
        default="qtuning",
        metadata={
            "help": "'qtuning' (select samples and tokens every step) or 'none' (train on everything: the "
            "full-data baseline, through the same loss path)."
        },
    )
    scoring: str = field(
        default="probe",
        metadata={
            "help": "'probe': a no-grad forward scores the batch, then forward+backward runs on the kept samples "
            "only (saves compute). 'reuse': one forward with grad over the whole batch gives the scores "
            "and the masked loss (the authors' code: saves nothing, for faithful reproduction). 'auto': the "
            "first steps are timed in both modes (1 warm-up, then 3 each, alternating), then the one with "
            "the faster fastest step runs for the rest of training (a probe step is slower than a full-data step where steps are "
            "bound by kernel launches, e.g. a small model on a GPU). 'stale': probe mode, but a row scored "
            "before (by the probe, or by its own training forward when it was kept) is selected with those "
            "scores, up to an epoch old; only unscored rows and a stale_reprobe_fraction of the others are "
            "probed (from the second epoch on, most of the probe is saved, but the kept samples differ from "
            "what fresh scores keep: Jaccard 0.18-0.66 over real 3-epoch runs, docs/algorithm.md section 6)."
        },
    )
    stale_reprobe_fraction: float = field(
        default=0.25,
        metadata={
            "help": "scoring='stale': the share of a batch's already-scored rows that are probed afresh anyway "
            "(drawn at random each step), so that no row's scores stay stale for long. 0: probe only "
            "rows never scored; 1: probe mode."
        },
    )
    selection_pool: str = field(
        default="global",
        metadata={
            "help": "Which samples compete in one selection: 'global' (micro-batch i of every process: the "
            "same selection on 1 or N processes), 'accumulation' (every micro-batch of the optimizer "
            "step on every process: the largest pool) or 'micro_batch' (each process's micro-batch "
            "alone: the paper; the result depends on the number of processes)."
        },
    )
    probe_precision: str = field(
        default="auto",
        metadata={
            "help": "Precision of the probe's forward: 'bf16' (bf16 autocast for the probe only; the "
            "vocabulary softmax stays fp32), 'same' as training, or 'auto': bf16 where the hardware "
            "runs it natively (a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX), else 'same'. "
            "Training in bf16 mixed precision already probes in bf16."
        },
    )
    probe_batch_size: int = field(
        default=-1,
        metadata={
            "help": "The probe runs the batch's rows sorted by length in groups of this many, each trimmed "
            "to its longest row, so padding costs little. 0: the whole batch in one forward. -1 "
            "(auto): 4 on a CPU (compute-bound), 0 on a GPU (a small model's steps are bound by "
            "kernel launches there, and groups multiply them)."
        },
    )
    score_chunk_size: int = field(
        default=512, metadata={"help": "Positions per chunk when scoring over the vocabulary (memory O(chunk x V))."}
    )
    loss_chunk_size: int = field(
        default=4096,
        metadata={
            "help": "Above this many loss positions in a micro-batch, the LM head and cross-entropy run in "
            "checkpointed chunks of this size (bounded memory, one extra head pass). 0: never chunk."
        },
    )
    plan_log: bool = field(
        default=True,
        metadata={
            "help": "Write every micro-batch's plan (per-sample PPL, Ent, role, kept tokens) to "
            "<output_dir>/qtuning_plans.jsonl."
        },
    )
    plan_log_tokens: bool = field(
        default=True,
        metadata={"help": "Also log, for each Q2 sample, its response token ids, smoothed scores and pruned flags."},
    )
    warn_every_steps: int = field(
        default=50, metadata={"help": "Rate limit of the failure-signature warnings, in optimizer steps."}
    )
    # TRL defaults that do not suit a small-model or CPU run; same meaning as in SFTConfig.
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
        SFTConfig.__post_init__(self)
        QTuningConfig.__post_init__(self)
        _check_choice("pruning_method", self.pruning_method, PRUNING_METHODS)
        _check_choice("scoring", self.scoring, SCORING_MODES)
        _check_choice("probe_precision", self.probe_precision, PROBE_PRECISIONS)
        _check_choice("selection_pool", self.selection_pool, SELECTION_POOLS)
        if self.scoring in ("reuse", "auto") and self.selection_pool == "accumulation":
            raise ConfigError(
                f"selection_pool='accumulation' is not allowed with scoring={self.scoring!r}: reuse mode scores each micro-batch "
                "inside its own training forward, so the step's other micro-batches are not scored yet"
            )
        if self.scoring in ("reuse", "auto") and (self.sample_pruner, self.token_pruner) != ("qtuning", "qtuning"):
            raise ConfigError(
                f"sample_pruner={self.sample_pruner!r}, token_pruner={self.token_pruner!r} are not allowed with "
                f"scoring={self.scoring!r}: the baselines run in probe mode (scoring: probe)"
            )
        if not 0.0 <= self.stale_reprobe_fraction <= 1.0:
            raise ConfigError(
                f"stale_reprobe_fraction={self.stale_reprobe_fraction!r} is not allowed: expected a number in [0, 1]"
            )
        if self.scoring == "stale" and self.token_pruner == "rho1":
            raise ConfigError(
                "scoring='stale' is not allowed with token_pruner='rho1': the reference model's scores are not "
                "cached; use scoring: probe"
            )
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
        if (self.sample_pruner, self.token_pruner) == ("none", "none"):
            raise ConfigError(
                "sample_pruner='none' with token_pruner='none' is not allowed: to train on every sample and token "
                "(the full-data baseline), set pruning_method: none, the one way to say full data"
            )
        if self.probe_batch_size < -1:
            raise ConfigError(
                f"probe_batch_size={self.probe_batch_size!r} is not allowed: expected an integer >= 0, or -1 (auto)"
            )
        for name in ("score_chunk_size",):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not allowed: expected an integer >= 1")
        if self.loss_chunk_size < 0:
            raise ConfigError(f"loss_chunk_size={self.loss_chunk_size!r} is not allowed: expected an integer >= 0")

    def resolved_probe_precision(self) -> str:
        """'bf16' or 'same': what probe_precision means on this machine."""
        if self.probe_precision != "auto":
            return self.probe_precision
        import torch

        if self.device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "same"
        if self.device.type == "cpu":
            return "bf16" if cpu_has_native_bf16() else "same"
        return "same"

    def resolved_probe_batch_size(self) -> int:
        """probe_batch_size with -1 (auto) resolved for this device."""
        if self.probe_batch_size >= 0:
            return self.probe_batch_size
        return 4 if self.device.type == "cpu" else 0

    def qtuning_config(self) -> QTuningConfig:
        """The engine's settings alone."""
        return QTuningConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(QTuningConfig)})


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with AVX512-BF16 or AMX-BF16 (Linux /proc/cpuinfo); False where unknown."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def train_configs(settings: dict) -> tuple[RunConfig, QTuningSFTConfig]:
    """One flat dict of settings (a recipe, with any overrides) as (RunConfig, QTuningSFTConfig)."""
    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    run = RunConfig(**{k: v for k, v in settings.items() if k in run_fields})
    return run, QTuningSFTConfig(**{k: v for k, v in settings.items() if k not in run_fields})
