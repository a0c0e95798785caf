"""QTuner: Q-Tuning for any PyTorch or accelerate training loop, in three calls.

    tuner = QTuner(QTuningConfig(sample_ratio=0.25, token_ratio=0.5))
    for batch in loader:                       # dicts of input_ids, attention_mask, labels (B, T)
        plan = tuner.plan(model, batch)        # 1. score the batch with the model (no grad) and select
        kept = tuner.apply(batch, plan)        # 2. the kept rows, pad trimmed, pruned tokens' labels -100
        loss = tuner.loss(model, kept)         # 3. mean cross-entropy over the kept tokens
        loss.backward(); optimizer.step(); optimizer.zero_grad()

`kept` is an ordinary batch: `model(**kept).loss` gives the same value as `tuner.loss` (which is
faster: it applies the LM head only where a loss is taken). With gradient accumulation, pass
`num_items=` the kept tokens of the whole step so that the micro-batches add up to one big batch.
"""

from __future__ import annotations

import torch

from ..engine.config import QTuningConfig
from ..engine.history import ScoreWindow
from ..engine.selection import SelectionPlan, plan_batch
from .kept_batch import LOSS_WEIGHT_KEY, apply_plan, kept_token_count, loss_on_kept
from .probe import score_batch

# apply_plan and loss_on_kept live in qtuning.modeling.kept_batch (the trainer uses them too); re-exported here.
__all__ = ["LOSS_WEIGHT_KEY", "QTuner", "apply_plan", "kept_token_count", "loss_on_kept"]


class QTuner:
    """Policy only: no patching, no data loader of its own. The one state across steps is the score
    window of thresholds="history" (`self.window`; save `window.state_dict()` with your checkpoints
    and restore it with `ScoreWindow.from_state_dict` to resume exactly)."""

    def __init__(
        self,
        config: QTuningConfig | None = None,
        score_chunk_size: int = 512,
        loss_chunk_size: int = 4096,
        probe_batch_size: int = 4,
    ):
        self.config = config or QTuningConfig()
        self.score_chunk_size = score_chunk_size
        self.probe_batch_size = probe_batch_size
        self.loss_chunk_size = loss_chunk_size
        history = self.config.thresholds == "history" and self.config.sample_pruner == "qtuning"
        self.window = ScoreWindow(self.config.history_window) if history else None

    def plan(self, model, batch: dict) -> SelectionPlan:
        scores, loss_mask, attention = score_batch(
            model,
            batch["input_ids"],
            batch["attention_mask"],
            batch["labels"],
            self.config.entropy_positions,
            self.score_chunk_size,
            self.probe_batch_size,
        )
        return plan_batch(
            scores.nll, scores.entropy, loss_mask, self.config, attention_mask=attention, window=self.window
        )

    def apply(self, batch: dict, plan: SelectionPlan) -> dict:
        return apply_plan(batch, plan)

    def loss(self, model, kept: dict, num_items: int | torch.Tensor | None = None) -> torch.Tensor:
        return loss_on_kept(model, kept, num_items, self.loss_chunk_size)
