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
    """Drop-in for `trl.SFTTrainer`: pass a `QTuningSFTConfig` as `args`.

    `QTuningSFTTrainer(model, args=QTuningSFTConfig(...), train_dataset=..., ...)` takes SFTTrainer's
    arguments; the Q-Tuning settings are the config's own fields (no `qtuning_config=`). Everything
    else is `QTuningTrainerMixin`'s: the attributes it sets (qt_settings, qt_config, qtuning_summary),
    `train` and `compute_loss`. With `packing: true`, each row's id is spread over its tokens before
    TRL packs the rows (strategy "bfd" only), so every packed segment keeps it.

    Args:
        *args: SFTTrainer's positional arguments: model, then args (a QTuningSFTConfig), ...
        **kwargs: SFTTrainer's keyword arguments (args=, train_dataset=, eval_dataset=,
            processing_class=, data_collator=, peft_config=, ...).

    Raises:
        TypeError: `args` is not a QTuningSFTConfig (missing, or a plain SFTConfig), or
            `qtuning_config=` is passed as well.
        ConfigError: scoring="stale" with a training set that has no row ids, or padding_free=True
            with an attention that does not keep packed samples apart.
        ModelSpecError: The model's logits are not its LM head applied to its final hidden states.
    """

    def __init__(self, *args, **kwargs):
        config = kwargs.get("args") if "args" in kwargs else (args[1] if len(args) > 1 else None)
        if not isinstance(config, QTuningSFTConfig):
            raise TypeError(f"QTuningSFTTrainer needs args=QTuningSFTConfig(...), got {type(config).__name__}")
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        """packing=True: TRL's preparation without packing (tokenise, labels, truncate), then packing.

        The row id is spread over every token and the rows are packed as TRL packs them, so each
        segment keeps its id.
        """
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
