"""Q-Tuning in LLaMA-Factory: run LLaMA-Factory's own SFT workflow with QTuningTrainerMixin on its trainer.

    qtuning llamafactory train.yaml [key=value ...]
    python -m qtuning.integrations.llamafactory train.yaml [key=value ...]   (the same `main`)

train.yaml is LLaMA-Factory's YAML (written for LLaMA-Factory 0.9.5) with one added block:

    qtuning:
      sample_ratio: 0.25
      token_ratio: 0.5

The block's keys are QTuningTrainingConfig fields (a misspelt key is refused). The launcher removes the
block (LLaMA-Factory's HfArgumentParser refuses keys it does not know), refuses the options that cannot
combine with Q-Tuning (`incompatible_option`), replaces the name `CustomSeq2SeqTrainer` in
`llamafactory.train.sft.workflow` (where `run_sft` builds its trainer by that name) with QTuningTrainerMixin
on that class, and calls LLaMA-Factory's `run_exp(args=dict)`: its data, templates, LoRA and saving run
unchanged. key=value arguments override the YAML as in `llamafactory-cli train` (qtuning.sample_ratio=0.3
reaches the block).

Distributed: `llamafactory-cli train` re-launches itself under torchrun, where a patch made in the parent
process would be lost. This launcher instead runs under torchrun itself when asked (FORCE_TORCHRUN=1, or
NPROC_PER_NODE > 1; NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT as LLaMA-Factory reads them), so each
worker applies the patch before run_exp. `torchrun -m qtuning.integrations.llamafactory train.yaml` works
as well.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

from ..engine.training_config import QTuningTrainingConfig
from ..errors import ConfigError, QTuningError
from ..extras import require_extra

BLOCK = "qtuning"
FIELDS = tuple(f.name for f in dataclasses.fields(QTuningTrainingConfig))
_built: list[str] = []  # names of the Q-Tuning trainers built in this process (checked after run_exp)


def load_config(path: str, overrides: Sequence[str] = ()) -> tuple[dict, QTuningTrainingConfig]:
    """(LLaMA-Factory's arguments without the qtuning block, the block as a QTuningTrainingConfig).

    Reads the YAML (or JSON) as LLaMA-Factory's read_args does: OmegaConf, with key=value overrides."""
    from omegaconf import OmegaConf

    loaded = OmegaConf.load(os.path.abspath(path))
    merged = OmegaConf.merge(loaded, OmegaConf.from_cli(list(overrides)))
    args = OmegaConf.to_container(merged, resolve=True)
    if not isinstance(args, dict):
        raise ConfigError(f"{path}: expected a mapping of LLaMA-Factory arguments, got {type(args).__name__}")
    block = args.pop(BLOCK, None)
    if block is None:
        raise ConfigError(f"{path} has no `{BLOCK}:` block: add one (e.g. {BLOCK}: {{sample_ratio: 0.25}})")
    return args, settings_from_block(block, path)


def settings_from_block(block, where: str) -> QTuningTrainingConfig:
    """The `qtuning:` block as a QTuningTrainingConfig; ConfigError (one line, naming `where`) otherwise."""
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: `{BLOCK}:` must be a mapping of Q-Tuning settings, got {block!r}")
    for key in block:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), FIELDS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(FIELDS)})"
            raise ConfigError(f"{where}: unknown key {BLOCK}.{key}{hint}")
    try:
        return QTuningTrainingConfig(**block)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {BLOCK}.{exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{where}: {BLOCK}: {exc}") from None


def incompatible_option(args: Mapping) -> str | None:
    """The one-line refusal for the first LLaMA-Factory option that cannot work with Q-Tuning, else None."""

    def refuse(key, why, fix=None):
        return f"{key}: {args.get(key)} cannot be combined with Q-Tuning: {why}; {fix or f'set {key}: false'}"

    stage = args.get("stage", "sft")
    if stage != "sft":
        return refuse("stage", "the launcher puts Q-Tuning on the SFT trainer only", "use stage: sft")
    for key, why in (
        ("use_dft_loss", "DFT replaces the trainer's loss (compute_loss_func)"),
        ("use_eaft_loss", "EAFT replaces the trainer's loss (compute_loss_func)"),
        ("use_asft_loss", "ASFT computes its own loss against a reference model"),
        ("enable_liger_kernel", "Liger's fused linear cross-entropy never builds the logits Q-Tuning scores"),
        ("neat_packing", "several samples share one row, and Q-Tuning scores, keeps and drops whole samples"),
        ("packing", "several samples share one row, and Q-Tuning scores, keeps and drops whole samples"),
        ("use_unsloth", "Unsloth's models return no logits by default (UNSLOTH_RETURN_LOGITS)"),
        ("use_mca", "Megatron-Core training uses another trainer"),
        ("use_hyper_parallel", "hyper-parallel training uses another trainer"),
        ("use_kt", "KTransformers training uses another trainer"),
        ("use_ray", "Ray workers do not see this process's patch"),
    ):
        if args.get(key):
            return refuse(key, why)
    return None


def patch_sft_trainer(settings: QTuningTrainingConfig) -> type:
    """Replace `CustomSeq2SeqTrainer` in llamafactory.train.sft.workflow by QTuningTrainerMixin on it."""
    from llamafactory.train.sft import workflow

    from ..training.trainer_mixin import QTuningTrainerMixin
    from .glue import mixin_trainer

    base = workflow.CustomSeq2SeqTrainer
    if issubclass(base, QTuningTrainerMixin):  # patched before in this process: wrap the original again
        base = base.qtuning_base

    def announce(trainer) -> None:
        _built.append(type(trainer).__name__)
        print(
            f"[qtuning] LLaMA-Factory trainer: {type(trainer).__name__} (QTuningTrainerMixin on {base.__name__}); "
            f"pruning_method={settings.pruning_method} scoring={settings.scoring} "
            f"sample_ratio={settings.sample_ratio} token_ratio={settings.token_ratio}",
            flush=True,
        )

    QTuningSeq2SeqTrainer = mixin_trainer(base, settings, "llamafactory", "QTuningSeq2SeqTrainer", announce)
    workflow.CustomSeq2SeqTrainer = QTuningSeq2SeqTrainer
    return QTuningSeq2SeqTrainer


def run(path: str, overrides: Sequence[str] = ()) -> None:
    """Check the config, patch the SFT trainer and run LLaMA-Factory's run_exp, in this process."""
    args, settings = load_config(path, overrides)
    message = incompatible_option(args)
    if message:
        raise ConfigError(f"{path}: {message}")
    patch_sft_trainer(settings)
    from llamafactory.train.tuner import run_exp

    _built.clear()
    run_exp(args=args)
    if not _built:
        raise RuntimeError(
            "LLaMA-Factory finished without building its SFT trainer through "
            "llamafactory.train.sft.workflow.CustomSeq2SeqTrainer: Q-Tuning did not run (an unsupported version?)"
        )


def _torchrun_command(argv: Sequence[str]) -> list[str] | None:
    """The torchrun command that re-runs this launcher in every worker, or None to run here."""
    if os.environ.get("LOCAL_RANK") is not None:  # already a torchrun worker
        return None
    nproc = os.environ.get("NPROC_PER_NODE")
    forced = os.environ.get("FORCE_TORCHRUN", "0").lower() in ("1", "true", "y")
    if not forced and int(nproc or 1) <= 1:
        return None
    if nproc is None:
        import torch

        nproc = str(max(1, torch.cuda.device_count()))
    return [
        "torchrun",
        "--nnodes",
        os.environ.get("NNODES", "1"),
        "--node_rank",
        os.environ.get("NODE_RANK", "0"),
        "--nproc_per_node",
        nproc,
        "--master_addr",
        os.environ.get("MASTER_ADDR", "127.0.0.1"),
        "--master_port",
        os.environ.get("MASTER_PORT", "29500"),
        "-m",
        __name__,
        *argv,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or not argv[0].endswith((".yaml", ".yml", ".json")):
        print("usage: qtuning llamafactory train.yaml [key=value ...]", file=sys.stderr)
        return 2
    try:
        require_extra("llamafactory", "`qtuning llamafactory`")
        command = _torchrun_command(argv)
        if command is not None:  # check once here, then every worker checks, patches and runs
            args, _ = load_config(argv[0], argv[1:])
            message = incompatible_option(args)
            if message:
                raise ConfigError(f"{argv[0]}: {message}")
            return subprocess.run(command, check=False).returncode
        run(argv[0], argv[1:])
    except QTuningError as exc:
        print(f"qtuning: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
