"""QTuningTrainingConfig: the engine's settings + how Q-Tuning runs inside a transformers Trainer.

What `QTuningTrainerMixin` reads. It imports no trl and no transformers, so a framework that has its
own trainer (Axolotl, LLaMA-Factory) builds one and hands it to the mixin:

    settings = QTuningTrainingConfig(sample_ratio=0.25, token_ratio=0.5, scoring="probe")
    trainer = MyTrainer(model=model, args=training_args, ..., qtuning_config=settings)

`QTuningSFTConfig` (qtuning.training.sft_config) is TRL's SFTConfig + this class: the same fields, read from
`args`. The engine's fields are inherited from `QTuningConfig`, not repeated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config import SELECTION_POOLS, ConfigError, QTuningConfig, _check_choice

PRUNING_METHODS = ("qtuning", "none")
SCORING_MODES = ("probe", "reuse", "auto", "stale")
PROBE_PRECISIONS = ("auto", "same", "bf16")

if TYPE_CHECKING:
    import torch


@dataclass
class QTuningTrainingConfig(QTuningConfig):
    """Q-Tuning's settings inside a Trainer: the engine's (QTuningConfig) and the trainer fields below.

    Built with keyword arguments, one per field, the engine's included
    (`QTuningTrainingConfig(sample_ratio=0.25, scoring="probe")`), and handed to a trainer as its
    `qtuning_config`. Each field's `help` metadata says what it does and what it allows
    (docs/configuration.md lists them all). Every value is checked at construction.

    Raises:
        ConfigError: At construction, a field's value, or a combination of fields, is not allowed (see
            `check_training_fields`); the message names the fields, the values and what is allowed.
    """

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
    group_field: str = field(
        default="",
        metadata={
            "help": "A column of the training set that names each row's group (its source, task or family, "
            "e.g. `source`): the run writes the group of every row id to <output_dir>/qtuning_groups.json and "
            "`qtuning report` shows, per group, the share of its rows kept and of the loss tokens trained. "
            "`qtuning train` refuses a row without the field; in a datasets.Dataset you pass, a missing value "
            "is the group '(none)'. Empty: no groups."
        },
    )
    warn_every_steps: int = field(
        default=50, metadata={"help": "Rate limit of the failure-signature notices, in optimizer steps."}
    )

    def __post_init__(self) -> None:
        QTuningConfig.__post_init__(self)
        self.check_training_fields()

    def check_training_fields(self) -> None:
        """The checks of the fields above and of their combinations with the engine's.

        Raises:
            ConfigError: A trainer field is not among its choices or out of its range, or a combination
                is not allowed: scoring="reuse"/"auto" with selection_pool="accumulation" or with a
                baseline pruner, scoring="stale" with token_pruner="rho1", or sample_pruner and
                token_pruner both "none" (full data is pruning_method="none").
        """
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
        if (self.sample_pruner, self.token_pruner) == ("none", "none"):
            raise ConfigError(
                "sample_pruner='none' with token_pruner='none' is not allowed: to train on every sample and token "
                "(the full-data baseline), set pruning_method: none, the one way to say full data"
            )
        if self.group_field and not self.plan_log:
            raise ConfigError(
                f"group_field={self.group_field!r} is not allowed with plan_log=False: the report joins the plan "
                "log's row ids with the rows' groups; set plan_log: true"
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

    def qtuning_config(self) -> QTuningConfig:
        """The engine's settings alone.

        Returns:
            A new QTuningConfig holding this object's values of the engine's fields.
        """
        return QTuningConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(QTuningConfig)})

    def training_config(self) -> QTuningTrainingConfig:
        """These settings alone, as a plain QTuningTrainingConfig (from a QTuningSFTConfig: without TRL's).

        Returns:
            A new QTuningTrainingConfig holding this object's values of its fields.
        """
        return QTuningTrainingConfig(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(QTuningTrainingConfig)}
        )


def resolved_probe_precision(probe_precision: str, device: torch.device) -> str:
    """'bf16' or 'same': what probe_precision means on `device`.

    Args:
        probe_precision: "auto", "same" or "bf16" (QTuningTrainingConfig.probe_precision).
        device: The device the probe runs on.

    Returns:
        probe_precision itself unless it is "auto"; for "auto", "bf16" where the device runs it natively
        (a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX), else "same".
    """
    if probe_precision != "auto":
        return probe_precision
    import torch

    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "same"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "same"
    return "same"


def resolved_probe_batch_size(probe_batch_size: int, device: torch.device) -> int:
    """probe_batch_size with -1 (auto) resolved for `device`: 4 on a CPU, 0 (the whole batch) elsewhere.

    Args:
        probe_batch_size: QTuningTrainingConfig.probe_batch_size: >= 0, or -1 (auto).
        device: The device the probe runs on.

    Returns:
        probe_batch_size where it is >= 0, else 4 on a CPU and 0 elsewhere.
    """
    if probe_batch_size >= 0:
        return probe_batch_size
    return 4 if device.type == "cpu" else 0


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 natively.

    Returns:
        True on x86 CPUs with AVX512-BF16 or AMX-BF16 (Linux /proc/cpuinfo); False where unknown.
    """
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
