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
    """Q-Tuning's three calls for your own training loop: `plan`, `apply`, `loss`.

    Policy only: no patching, no data loader of its own. The one state across steps is the score
    window of thresholds="history" (`window`; save `window.state_dict()` with your checkpoints and
    restore it with `ScoreWindow.from_state_dict` to resume exactly).

    Args:
        config: The selection's settings (sample_ratio, token_ratio, pruners, thresholds, ...).
            Default: `QTuningConfig()`.
        score_chunk_size: Positions per fp32 chunk of the LM head over the vocabulary when scoring
            (memory O(chunk x V)).
        loss_chunk_size: Above this many loss positions, the LM head and cross-entropy of `loss` run in
            checkpointed chunks of this size (bounded memory, one extra head pass). 0: never chunk.
        probe_batch_size: The probe runs the batch's rows sorted by length in groups of this many, each
            trimmed to its longest row. 0: the whole batch in one forward.

    Attributes:
        config: The QTuningConfig in use.
        score_chunk_size: As passed.
        loss_chunk_size: As passed.
        probe_batch_size: As passed.
        window: The ScoreWindow of recent (PPL, Ent) points when config.thresholds="history" and
            config.sample_pruner="qtuning" (updated by every `plan`), else None.
    """

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

    def plan(self, model: torch.nn.Module, batch: dict) -> SelectionPlan:
        """Score a batch with the model (no grad, eval mode) and select its samples and tokens.

        The probe runs the model's own forward (`logits_to_keep=1`) and applies the LM head in fp32
        only at the scored positions; dropout is off while it runs and the model's mode is restored
        after. With thresholds="history" the batch's points are added to `window`.

        Args:
            model: The causal LM being trained (a Hugging Face model with a separate backbone and
                output embedding; DDP/FSDP and PEFT wrappers are unwrapped).
            batch: input_ids, attention_mask, labels (B, T), unshifted and right-padded, labels -100
                where no loss is taken; on the model's device.

        Returns:
            The batch's SelectionPlan (on the CPU): the kept samples (B,) and, on the shifted grid,
            the (B, T) token_keep mask (position t decides the label of token t + 1).

        Raises:
            KeyError: `batch` lacks input_ids, attention_mask or labels.
            ModelSpecError: The model has no separate backbone and output embedding to score with.
            ScoreError: A score at a scored position is NaN or inf, or a sample's perplexity overflows.
            ValueError: config.token_pruner="rho1", which needs a reference model (the trainer has one).
        """
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
        """The batch to train on: the plan's kept rows, trailing pad columns trimmed, pruned labels -100.

        Same as `apply_plan(batch, plan)`.

        Args:
            batch: input_ids, attention_mask, labels (B, T), unshifted and right-padded: the batch
                that `plan` scored.
            plan: What `plan` returned for this batch.

        Returns:
            input_ids, attention_mask, labels (B', T'), T' <= T, plus "loss_weight" (B',) when the
            plan carries sample weights (InfoBatch). A plan that keeps no row gives row 0 with every
            label -100, so that a forward and backward still run and contribute zero.

        Raises:
            KeyError: `batch` lacks input_ids, attention_mask or labels.
        """
        return apply_plan(batch, plan)

    def loss(self, model: torch.nn.Module, kept: dict, num_items: int | torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy summed over the kept batch's loss positions, divided by `num_items`.

        Same as `loss_on_kept(model, kept, num_items, self.loss_chunk_size)`: the model's own forward,
        with the LM head applied (with grad) only at positions that carry a loss. Without sample
        weights it equals `model(**kept).loss` when `num_items` is None.

        Args:
            model: The causal LM being trained (as for `plan`).
            kept: What `apply` returned: input_ids, attention_mask, labels (B', T'), optionally
                "loss_weight" (B',).
            num_items: The denominator: the kept tokens of the whole optimizer step under gradient
                accumulation (so that the micro-batches add up to one big batch). None: the loss
                positions of `kept` itself. Clamped to at least 1.

        Returns:
            A scalar float32 tensor with grad, ready for `backward()`.

        Raises:
            KeyError: `kept` lacks input_ids or labels.
            ModelSpecError: The model has no separate backbone and output embedding.
            RuntimeError: The backbone's forward hook did not fire (no final hidden states).
        """
        return loss_on_kept(model, kept, num_items, self.loss_chunk_size)
