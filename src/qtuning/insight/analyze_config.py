"""The settings of `qtuning analyze` (AnalyzeConfig; its fields are the command's flags) and the check
that analyze and select run Q-Tuning's own selection."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.config import QTuningConfig
from ..errors import AnalysisError
from .stability import parse_pool_sizes


@dataclass
class AnalyzeConfig:
    """Settings of `qtuning analyze` (the selection's own settings are QTuningConfig's)."""

    model: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "Model that scores the data: built-in name, .gguf file, Hugging Face folder or hub id."},
    )
    data: str = field(
        default="alpaca-demo",
        metadata={"help": "Data to analyse: built-in name, .json/.jsonl/.parquet file or save_to_disk folder."},
    )
    output: str = field(
        default="analysis",
        metadata={
            "help": "Output folder: scores.parquet/.csv, token_scores.parquet, eu_plane.png, summary.md/.html, "
            "stability.json, and the score shards (kept for resuming)."
        },
    )
    max_samples: int = field(default=0, metadata={"help": "Score only the first N records (0: all)."})
    max_length: int = field(
        default=1024,
        metadata={"help": "Tokens per sample (longer ones are truncated, like `qtuning train --max_length`)."},
    )
    batch_size: int = field(default=8, metadata={"help": "Rows per scoring forward (rows are sorted by length)."})
    shard_rows: int = field(default=256, metadata={"help": "Rows per score shard: the unit of resuming."})
    pool_sizes: str = field(
        default="8,32,all",
        metadata={"help": "Selection pool sizes to analyse, comma-separated; 'all' is the whole dataset as one pool."},
    )
    shuffles: int = field(default=4, metadata={"help": "Shuffles per pool size for the threshold stability test."})
    seed: int = field(default=0, metadata={"help": "Seed of the pools' shuffles (shuffle s uses seed + s)."})
    examples: int = field(default=3, metadata={"help": "Example samples shown per quadrant in the summary."})
    group_field: str = field(
        default="",
        metadata={
            "help": "A field of every row that names its group (source, task or family): the summary, "
            "stability.json and the printout add, per group, its quadrant shares and the share Q-Tuning would "
            "keep at each pool size; scores.parquet gets a `group` column. Empty: no groups."
        },
    )
    device: str = field(default="auto", metadata={"help": "Device to score on: auto (cuda if available), cpu, cuda."})
    max_batches: int = field(
        default=0,
        metadata={
            "help": "Stop after scoring this many batches (0: no limit); a later run resumes from the "
            "last complete shard."
        },
    )

    def __post_init__(self) -> None:
        for name in ("max_length", "batch_size", "shard_rows", "shuffles"):
            if getattr(self, name) < 1:
                raise AnalysisError(f"{name}={getattr(self, name)!r} is not allowed: expected an integer >= 1")
        for name in ("max_samples", "examples", "max_batches"):
            if getattr(self, name) < 0:
                raise AnalysisError(f"{name}={getattr(self, name)!r} is not allowed: expected an integer >= 0")
        parse_pool_sizes(self.pool_sizes, 1)  # checks the syntax


def check_qtuning_selection(qcfg: QTuningConfig, command: str) -> None:
    """analyze and select run Q-Tuning's own stage 1; a baseline sample pruner has no EU-plane selection."""
    pruner = getattr(qcfg, "sample_pruner", "qtuning")
    if pruner != "qtuning":
        raise AnalysisError(
            f"sample_pruner={pruner!r} is not supported by `qtuning {command}`: it shows and runs "
            "Q-Tuning's EU-plane selection (sample_pruner='qtuning')"
        )
    if getattr(qcfg, "token_pruner", "qtuning") == "rho1":
        raise AnalysisError(
            f"token_pruner='rho1' is not supported by `qtuning {command}`: it needs a reference "
            "model's token losses, which the stored scores do not have"
        )
