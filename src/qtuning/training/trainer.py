"""QTuningSFTTrainer: TRL's SFTTrainer with Q-Tuning's dynamic sample and token pruning.

It is `QTuningTrainerMixin` (qtuning.training.trainer_mixin: the probe, the plans, the kept-row loss, the
logs, checkpoints and summary; docs/how-a-step-runs.md) on TRL's SFTTrainer, with its settings in
`args=QTuningSFTConfig(...)`. What is TRL's alone lives here: packing (`packing: true`), where each
row's id is spread over its tokens before TRL packs the rows, so that every packed segment keeps it.
"""

from __future__ import annotations

from ..data.row_ids import ID_KEY, TOKEN_ID_KEY
from ..data.row_ids import segment_ids as _segment_ids  # noqa: F401  (its old name here; tests import it)
from ..data.run_files import CHECKPOINT_STATE_FILE, SCORE_CACHE_FILE, SUMMARY_FILE  # noqa: F401  (re-exported: old home)
from ..extras import missing_extra
from .sft_config import QTuningSFTConfig
from .trainer_mixin import (  # noqa: F401  (re-exported: their old home)
    PACKED_KEY,
    PLAN_KEY,
    QTuningTrainerMixin,
)

try:
    from trl import SFTTrainer
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "trl", "QTuningSFTTrainer") from None


class QTuningSFTTrainer(QTuningTrainerMixin, SFTTrainer):
    """Drop-in for `trl.SFTTrainer`: pass a `QTuningSFTConfig` as `args`."""

    def __init__(self, *args, **kwargs):
        config = kwargs.get("args") if "args" in kwargs else (args[1] if len(args) > 1 else None)
        if not isinstance(config, QTuningSFTConfig):
            raise TypeError(f"QTuningSFTTrainer needs args=QTuningSFTConfig(...), got {type(config).__name__}")
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        """packing=True: TRL's preparation without packing (tokenise, labels, truncate), then the row id
        spread over every token and the rows packed as TRL packs them, so each segment keeps its id."""
        columns = getattr(dataset, "column_names", None) or []
        if not packing or ID_KEY not in columns:
            return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        from trl.data_utils import pack_dataset

        dataset = super()._prepare_dataset(dataset, processing_class, args, False, formatting_func, dataset_name)
        dataset = dataset.map(
            lambda row: {TOKEN_ID_KEY: [row[ID_KEY]] * len(row["input_ids"])}, desc=f"Row ids for {dataset_name}"
        )
        dataset = dataset.select_columns(
            [c for c in ("input_ids", "labels", TOKEN_ID_KEY) if c in dataset.column_names]
        )
        # the packing strategy is "bfd" (QTuningSFTConfig refuses the others): whole samples, never split
        dataset = pack_dataset(dataset, args.max_length, args.packing_strategy, {"desc": f"Packing {dataset_name}"})
        return dataset.shuffle(seed=args.seed) if args.shuffle_dataset else dataset
