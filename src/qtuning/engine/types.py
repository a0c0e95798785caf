"""The types of a selection (docs/algorithm.md sections 3 and 4).

A sample's `Role`, stage 1's `SampleSelection`, a pool's `SelectionPlan`, and the checked scores a
selection reads (`ScoredBatch`).

Pure data: the functions that fill them live in `qtuning.engine.selection` (stage 1 and stage 2),
`qtuning.engine.scored` (the checked scores) and `qtuning.engine.history` (score-history thresholds).
The threshold scalars are declared once, by `qtuning.engine.thresholds.Thresholds`, which a selection
holds; its plan reads them as its own attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from enum import IntEnum
from operator import attrgetter

import torch

from .scoring import SampleScores
from .thresholds import Thresholds


class Role(IntEnum):
    """A sample's role in a plan; `kept_role` tensors (int64) hold these values.

    Also importable as the constants ROLE_DROPPED, ROLE_KEPT, ROLE_Q2 and ROLE_Q4 (the same members).

    Attributes:
        DROPPED: 0, not trained on.
        KEPT: 1, kept by a baseline sample pruner (qtuning.engine.policies); token-prunable.
        Q2: 2, kept, token-prunable ("valuable misconception"; the kept high-PPL corner).
        Q4: 4, kept whole ("calibration data"; the kept low-PPL corner).
    """

    DROPPED = 0
    KEPT = 1
    Q2 = 2
    Q4 = 4


ROLE_DROPPED, ROLE_KEPT, ROLE_Q2, ROLE_Q4 = Role.DROPPED, Role.KEPT, Role.Q2, Role.Q4  # the earlier public names
ROLE_NAMES = {Role.DROPPED: "dropped", Role.KEPT: "kept", Role.Q2: "Q2", Role.Q4: "Q4"}
QUADRANT_NAMES = {
    1: "Q1 harmful noise",
    2: "Q2 valuable misconception",
    3: "Q3 redundant knowledge",
    4: "Q4 calibration data",
}


def _reads_thresholds(path: str):
    """Class decorator: each of `Thresholds.SCALARS` as a read-only attribute of the class.

    Each is read from the `Thresholds` at the dotted `path` (so the scalars are declared once, in `Thresholds`).
    """

    def install(cls):
        for name, doc in Thresholds.SCALARS.items():
            setattr(cls, name, property(attrgetter(f"{path}.{name}"), doc=doc))
        return cls

    return install


@_reads_thresholds("thresholds")
@dataclass
class SampleSelection:
    """Stage 1's result for a pool of samples: who is kept, in which role, and the pool's thresholds.

    The threshold scalars (`Thresholds.SCALARS`: alpha, ppl_lo, ..., bisection_kept_fraction) read as
    read-only attributes of the selection (selection.alpha is selection.thresholds.alpha).

    Attributes:
        kept_role: (B,) int64 Role values: DROPPED, KEPT (a baseline), Q2 or Q4.
        supplemented: (B,) bool: kept by the supplement rather than by the bisection corners.
        quadrant: (B,) int64, 1..4 by the mid thresholds, 0 without a trainable position.
        pool_size: N: samples with at least one trainable position.
        target_count: K = min(N, max(1, round(sample_ratio * N))).
        thresholds: The last bisection iterate (Thresholds.none(): all 0, when no bisection ran).
        weight: (B,) float64 loss weights (InfoBatch); None = all 1.
    """

    kept_role: torch.Tensor
    supplemented: torch.Tensor
    quadrant: torch.Tensor
    pool_size: int = 0
    target_count: int = 0
    thresholds: Thresholds = field(default_factory=Thresholds.none)
    weight: torch.Tensor | None = None

    def rows(self, start: int, stop: int) -> SampleSelection:
        """The selection of samples start..stop-1 of the pool (the pool-level fields are shared).

        Args:
            start: First sample (row) taken.
            stop: One past the last sample taken.

        Returns:
            A new SampleSelection whose per-sample tensors are cut to rows start..stop-1; pool_size,
            target_count and thresholds are those of the whole pool.
        """
        return replace(
            self,
            kept_role=self.kept_role[start:stop],
            supplemented=self.supplemented[start:stop],
            quadrant=self.quadrant[start:stop],
            weight=None if self.weight is None else self.weight[start:stop],
        )


def _part(part: str, name: str, doc: str) -> property:
    """A read-only attribute of the plan that is a field of one of its parts."""
    return property(lambda self: getattr(getattr(self, part), name), doc=doc)


@_reads_thresholds("selection.thresholds")
@dataclass
class SelectionPlan:
    """What to train on for one selection pool: stage 1's selection, the samples' scores, stage 2's token mask.

    Tensors live on the CPU. The parts' fields read as the plan's own (plan.kept_role, plan.alpha,
    plan.sample_ppl, ...) and the counts are derived from them (plan.num_kept, plan.num_kept_tokens, ...),
    so nothing is stored twice. `plan_batch` makes one; `SelectionPlan.keep_all` makes full data's.

    Attributes:
        selection: Per sample (B,): roles, supplement, quadrants, weights; the pool's thresholds.
        scores: Per sample (B,): PPL, Ent, trainable tokens.
        token_keep: (B, T) bool, subset of loss_mask: the positions that carry a loss.
        token_score: (B, T) float64, smoothed perplexity s_i (or a baseline's priority) at the
            token-pruning candidates, 0 elsewhere.
    """

    selection: SampleSelection
    scores: SampleScores
    token_keep: torch.Tensor
    token_score: torch.Tensor

    # per sample, (B,)
    kept_role = _part(
        "selection",
        "kept_role",
        "(B,) int64 Role values: 0 dropped, 1 kept by a baseline, "
        "2 kept as Q2 (token-prunable), 4 kept as Q4 (kept whole)",
    )
    supplemented = _part("selection", "supplemented", "(B,) bool: kept by the supplement, not by the corners")
    quadrant = _part("selection", "quadrant", "(B,) int64: 1..4 by the mid thresholds, 0 without a trainable position")
    sample_weight = _part("selection", "weight", "(B,) float64 loss weight (InfoBatch's rescaling); None = all 1")
    sample_ppl = _part("scores", "ppl", "(B,) float64, 0 where the sample has no trainable position")
    sample_entropy = _part("scores", "entropy", "(B,) float64, 0 where the sample has no trainable position")
    num_trainable_tokens = _part("scores", "num_tokens", "(B,) int64: trainable positions per sample")
    # the pool
    pool_size = _part("selection", "pool_size", "N: samples with at least one trainable position")
    target_count = _part("selection", "target_count", "K = min(N, max(1, round(sample_ratio * N)))")
    thresholds = _part("selection", "thresholds", "the pool's Thresholds (their scalars read as the plan's own)")

    # the scalars of stats() and of the logs, in this order
    SCALARS = (
        "pool_size",
        "target_count",
        *Thresholds.SCALARS,
        "num_kept",
        "num_supplemented",
        "num_trainable_tokens_kept_samples",
        "num_kept_tokens",
        "num_pruned_tokens",
    )

    @property
    def sample_keep(self) -> torch.Tensor:
        """(B,) bool: the samples trained on."""
        return self.kept_role != Role.DROPPED

    @property
    def num_kept(self) -> int:
        """The number of samples trained on."""
        return int(self.sample_keep.sum())

    @property
    def num_supplemented(self) -> int:
        """The number of kept samples chosen by the supplement."""
        return int(self.supplemented.sum())

    @property
    def num_trainable_tokens_kept_samples(self) -> int:
        """Trainable tokens of the kept samples, before token pruning."""
        return int(self.num_trainable_tokens[self.sample_keep].sum())

    @property
    def num_kept_tokens(self) -> int:
        """token_keep.sum(): the positions that carry a loss."""
        return int(self.token_keep.sum())

    @property
    def num_pruned_tokens(self) -> int:
        """Trainable tokens of kept samples masked by stage 2."""
        return self.num_trainable_tokens_kept_samples - self.num_kept_tokens

    @classmethod
    def keep_all(cls, loss_mask: torch.Tensor) -> SelectionPlan:
        """The 'plan' of full-data training: every sample with a trainable position, every trainable token.

        Args:
            loss_mask: (B, T) bool, the trainable positions.

        Returns:
            A plan keeping every sample with a trainable position as Q4 (whole), with token_keep a copy of
            loss_mask; the scores are 0 (nothing was scored) and the thresholds converged, kept fraction 1.
        """
        keep = loss_mask.any(dim=1)  # (B,)
        n = int(keep.sum())
        batch = loss_mask.shape[0]
        zeros = torch.zeros(batch, dtype=torch.float64)
        selection = SampleSelection(
            kept_role=torch.where(keep, Role.Q4, Role.DROPPED),
            supplemented=torch.zeros_like(keep),
            quadrant=torch.zeros(batch, dtype=torch.int64),
            pool_size=n,
            target_count=n,
            thresholds=Thresholds.none(converged=True, kept_fraction=1.0),
        )
        scores = SampleScores(ppl=zeros, entropy=zeros, num_tokens=loss_mask.sum(dim=1), has_response=keep)
        return cls(
            selection=selection,
            scores=scores,
            token_keep=loss_mask.clone(),
            token_score=torch.zeros(loss_mask.shape, dtype=torch.float64),
        )

    def take(self, start: int, stop: int, width: int | None = None) -> SelectionPlan:
        """The plan of samples start..stop-1 (token tensors cut to `width` columns); pool fields shared.

        Args:
            start: First sample (row) taken.
            stop: One past the last sample taken.
            width: Columns of the token tensors kept (the part's own T); None keeps them all.

        Returns:
            A new SelectionPlan of rows start..stop-1; pool_size, target_count and thresholds are those
            of the whole pool.
        """
        rows, cols = slice(start, stop), slice(0, width)
        scores = SampleScores(**{f.name: getattr(self.scores, f.name)[rows] for f in fields(SampleScores)})
        return SelectionPlan(
            selection=self.selection.rows(start, stop),
            scores=scores,
            token_keep=self.token_keep[rows, cols],
            token_score=self.token_score[rows, cols],
        )

    def stats(self) -> dict[str, float | int | bool]:
        """The scalars, for logging: SCALARS, then the count of samples in each quadrant.

        Returns:
            Name -> value: each of SCALARS in its order, then quadrant_1 .. quadrant_4, the number of
            samples in each quadrant.
        """
        out = {name: getattr(self, name) for name in self.SCALARS}
        for q in range(1, 5):
            out[f"quadrant_{q}"] = int((self.quadrant == q).sum())
        return out


@dataclass
class ScoredBatch:
    """A batch's scores, checked and on the CPU in float64: everything a selection reads.

    Attributes:
        token_nll: (B, T) float64, 0 outside loss_mask.
        loss_mask: (B, T) bool.
        attention_mask: (B, T) bool, or None.
        scores: Per-sample PPL, Ent, token counts.
        reference_nll: (B, T) float64: a reference model's NLL (token_pruner="rho1"), or None.
        non_finite_rows: Rows left out because their scores were NaN/inf (prepare_scores(non_finite="drop")).
    """

    token_nll: torch.Tensor
    loss_mask: torch.Tensor
    attention_mask: torch.Tensor | None
    scores: SampleScores
    reference_nll: torch.Tensor | None = None
    non_finite_rows: int = 0
