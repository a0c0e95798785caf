"""Q-Tuning's two-stage selection (docs/algorithm.md sections 3 and 4). Pure torch, no model code.

    plan = plan_batch(token_nll, token_entropy, loss_mask, cfg, attention_mask=None)

Stage 1 picks samples on the Error-Uncertainty plane by a bisection over quantile levels,
then tops the kept set up to the target count (the supplement). Stage 2 prunes, inside the
Q2 ("misconception") samples only, the trainable tokens with the highest neighbour-smoothed
perplexity. All arithmetic runs in float64 on the CPU, so a plan does not depend on the
model's dtype or device; the bisection loops over iterations, never over samples or tokens.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, ScoreError
from .config import QTuningConfig
from .history import ScoreWindow, select_with_history
from .policies import baseline_keep, target_count, token_priority
from .scored import concat_scored, prepare_scores  # defined in .scored; importable from here, their earlier home
from .scoring import SampleScores
from .seeds import derive_seed
from .thresholds import Thresholds, bisect_thresholds, corner_closeness, corner_membership, quantile_sorted  # noqa: F401

# The types live in qtuning.engine.types; their earlier home re-exports them.
from .types import (  # noqa: F401
    QUADRANT_NAMES,
    ROLE_DROPPED,
    ROLE_KEPT,
    ROLE_NAMES,
    ROLE_Q2,
    ROLE_Q4,
    Role,
    SampleSelection,
    ScoredBatch,
    SelectionPlan,
)

# exp() overflows float64 above ~709.78; a token NLL that large is already "infinitely" surprising.
_MAX_TOKEN_NLL = 700.0


def plan_batch(
    token_nll: torch.Tensor,
    token_entropy: torch.Tensor,
    loss_mask: torch.Tensor,
    cfg: QTuningConfig,
    attention_mask: torch.Tensor | None = None,
    window: ScoreWindow | None = None,
) -> SelectionPlan:
    """Select the samples and tokens to train on in one pool.

    Stage 1 (the samples, by `cfg.sample_pruner`) then stage 2 (the tokens, by `cfg.token_pruner`), in
    float64 on the CPU. All tensors are aligned after the causal shift (see `qtuning.engine.scoring`).
    The random baselines draw from torch's global generator (`plan_pool` takes a seed).

    Args:
        token_nll: Float (B, T) per-token NLL.
        token_entropy: Float (B, T) per-token entropy.
        loss_mask: Bool (B, T), True at trainable positions.
        cfg: The selection's settings.
        attention_mask: Bool (B, T), True at non-pad positions (needed for token_budget="batch" and
            entropy_positions="all").
        window: The run's score history, for cfg.thresholds="history" (updated with this pool).

    Returns:
        The pool's SelectionPlan (on the CPU): roles, scores, thresholds and the (B, T) token_keep mask.

    Raises:
        ScoreError: A tensor is not (B, T) like token_nll, attention_mask is missing where cfg needs it,
            a score at a scored position is NaN or inf, or a sample's perplexity overflows float64.
        ConfigError: cfg.thresholds="history" without a `window`.
        ValueError: cfg.token_pruner="rho1", which needs a reference model's NLL (`plan_pool` with
            `ScoredBatch.reference_nll`).
    """
    batch = prepare_scores(token_nll, token_entropy, loss_mask, cfg, attention_mask)
    return plan_pool([batch], cfg, window=window)[0]


def build_plan(
    batch: ScoredBatch, selection: SampleSelection, cfg: QTuningConfig, generator: torch.Generator | None = None
) -> SelectionPlan:
    """Stage 2 on a batch whose samples are already selected (possibly within a larger pool).

    Args:
        batch: The batch's checked scores (`prepare_scores`).
        selection: Stage 1's selection of the batch's rows.
        cfg: The settings (token_pruner, prune_tokens_in, token_ratio, ... are read).
        generator: Drives token_pruner="random".

    Returns:
        The batch's SelectionPlan.

    Raises:
        ValueError: cfg.token_pruner="rho1" and batch.reference_nll is None.
    """
    kept_role = selection.kept_role
    if cfg.sample_pruner != "qtuning" or cfg.prune_tokens_in == "q2_q4":
        prunable = kept_role != Role.DROPPED  # (B,)
    else:
        prunable = kept_role == Role.Q2
    if cfg.token_pruner == "none":
        prunable = torch.zeros_like(prunable)
    priority = None
    if cfg.token_pruner not in ("qtuning", "none"):
        priority = token_priority(
            cfg.token_pruner, batch.token_nll, batch.loss_mask, generator=generator, reference_nll=batch.reference_nll
        )
    token_keep, token_score, _ = prune_tokens(
        batch.token_nll, batch.loss_mask, kept_role, cfg, batch.attention_mask, prunable=prunable, priority=priority
    )
    return SelectionPlan(selection=selection, scores=batch.scores, token_keep=token_keep, token_score=token_score)


def select_pool(
    scores: SampleScores,
    cfg: QTuningConfig,
    generator: torch.Generator | None = None,
    progress: float = 0.0,
    window: ScoreWindow | None = None,
) -> SampleSelection:
    """Stage 1 by `cfg.sample_pruner`: Q-Tuning's bisection, or a baseline of `qtuning.engine.policies`.

    Args:
        scores: The pool's per-sample scores, (B,) each.
        cfg: The settings.
        generator: Drives the random draws of the baselines.
        progress: Fraction of training done (InfoBatch's annealing).
        window: The run's score history, for cfg.thresholds="history" (updated with this pool).

    Returns:
        The pool's SampleSelection (a baseline's kept samples take Role.KEPT).

    Raises:
        ScoreError: A valid sample's PPL or Ent is NaN or inf (sample_pruner="qtuning").
        ConfigError: cfg.thresholds="history" without a `window`.
    """
    if cfg.sample_pruner == "qtuning":
        return select_samples(scores.ppl, scores.entropy, scores.has_response, cfg, window)
    valid = scores.has_response.detach().to("cpu", torch.bool)
    keep, weight = baseline_keep(
        cfg.sample_pruner,
        scores.ppl.detach().cpu().double(),
        scores.entropy.detach().cpu().double(),
        scores.num_tokens.detach().cpu(),
        valid,
        cfg.sample_ratio,
        generator=generator,
        progress=progress,
        infobatch_anneal=cfg.infobatch_anneal,
    )
    n = int(valid.sum())
    return SampleSelection(
        kept_role=torch.where(keep, Role.KEPT, Role.DROPPED),
        supplemented=torch.zeros_like(keep),
        quadrant=torch.zeros(keep.shape[0], dtype=torch.int64),
        pool_size=n,
        target_count=target_count(n, cfg.sample_ratio),
        thresholds=Thresholds.none(converged=True, kept_fraction=int(keep.sum()) / n if n else 0.0),
        weight=None if bool((weight == 1).all()) else weight,
    )


def select_samples(
    sample_ppl: torch.Tensor,
    sample_entropy: torch.Tensor,
    has_response: torch.Tensor,
    cfg: QTuningConfig,
    window: ScoreWindow | None = None,
) -> SampleSelection:
    """Stage 1 on per-sample scores (docs/algorithm.md section 3): bisection, then the supplement.

    Samples without a trainable position take no part in the thresholds and are never kept. With
    cfg.thresholds="history" the lines come from `window` (updated with this pool; section 3.5); then
    the noise-aware options (supplement_toward, max_q2_share) apply to either.

    Args:
        sample_ppl: (B,) float per-sample perplexity.
        sample_entropy: (B,) float per-sample entropy.
        has_response: (B,) bool, the samples with at least one trainable position.
        cfg: The settings.
        window: The run's score history; required with cfg.thresholds="history".

    Returns:
        The pool's SampleSelection: Q2/Q4 roles, the supplement, quadrants and the last bisection
        iterate's thresholds.

    Raises:
        ScoreError: A sample with a trainable position has a NaN or inf PPL or Ent.
        ConfigError: cfg.thresholds="history" without a `window`.
    """
    ppl = sample_ppl.detach().to("cpu", torch.float64)
    ent = sample_entropy.detach().to("cpu", torch.float64)
    valid = has_response.detach().to("cpu", torch.bool)
    n = int(valid.sum())
    if n and not (torch.isfinite(ppl[valid]).all() and torch.isfinite(ent[valid]).all()):
        raise ScoreError("sample scores contain NaN or Inf: refusing to select from broken scores")
    if cfg.thresholds == "history":
        if window is None:
            raise ConfigError(
                "thresholds='history' needs the score window of the run: plan through "
                "QTuningSFTTrainer or QTuner, or pass window=ScoreWindow(cfg.history_window)"
            )
        h = select_with_history(
            ppl,
            ent,
            valid,
            window,
            cfg.sample_ratio,
            max_iters=cfg.bisection_max_iters,
            tolerance=cfg.bisection_tolerance,
            upper=cfg.bisection_upper,
            kept_quadrants=cfg.kept_quadrants,
            fill_toward=cfg.supplement_toward,
        )
        result = _selection_from(h.kept_role, h.supplemented, h.quadrant, h.thresholds, n, h.target_count)
        toward_high, toward_low = h.toward_high, h.toward_low
    else:
        result, toward_high, toward_low = _select_in_pool(ppl, ent, valid, cfg)
    if cfg.max_q2_share < 1.0 and n:
        _cap_q2_share(result, valid, toward_high, toward_low, cfg.max_q2_share)
    return result


def _selection_from(kept_role, supplemented, quadrant, t: Thresholds, n: int, target: int) -> SampleSelection:
    return SampleSelection(
        kept_role=kept_role,
        supplemented=supplemented,
        quadrant=quadrant,
        pool_size=n,
        target_count=target,
        thresholds=t,
    )


def _closeness(ppl, ent, valid, kept_quadrants: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(toward the high-PPL kept corner, toward the low-PPL one), (B,) each.

    On the plane min-max normalised over the valid samples; for Q2/Q4 these are p - e and e - p.
    """
    return corner_closeness(_min_max(ppl, valid), _min_max(ent, valid), kept_quadrants)


def _select_in_pool(ppl, ent, valid, cfg: QTuningConfig) -> tuple[SampleSelection, torch.Tensor, torch.Tensor]:
    """The paper's stage 1: the lines from the pool itself, then the supplement."""
    batch_size = ppl.shape[0]
    kept_role = torch.zeros(batch_size, dtype=torch.int64)
    supplemented = torch.zeros(batch_size, dtype=torch.bool)
    quadrant = torch.zeros(batch_size, dtype=torch.int64)
    n = int(valid.sum())
    if n == 0:
        zeros = torch.zeros(batch_size, dtype=torch.float64)
        return SampleSelection(kept_role=kept_role, supplemented=supplemented, quadrant=quadrant), zeros, zeros
    r_s = cfg.sample_ratio
    # The kept corners (section 3): the high-PPL one is Q2 (low entropy) or, as an ablation, Q1; the
    # low-PPL one is Q4 (high entropy) or Q3. The result is the LAST bisection iterate.
    t = bisect_thresholds(
        ppl[valid],
        ent[valid],
        r_s,
        max_iters=cfg.bisection_max_iters,
        tolerance=cfg.bisection_tolerance,
        upper=cfg.bisection_upper,
        kept_quadrants=cfg.kept_quadrants,
    )
    in_high, in_low = corner_membership(ppl, ent, valid, t, cfg.kept_quadrants)
    kept_role[in_high] = Role.Q2
    kept_role[in_low] = Role.Q4
    toward_high, toward_low = _closeness(ppl, ent, valid, cfg.kept_quadrants)

    # Supplement: top up to K with the samples furthest from the diagonal of the normalised plane,
    # taken from every not-yet-kept sample (the code's rule). Ties go to the lower batch index.
    target = target_count(n, r_s)  # Python's round: half to even
    missing = target - int((kept_role != Role.DROPPED).sum())
    if missing > 0:
        low_only = cfg.supplement_toward == "low_ppl"
        distance = toward_low if low_only else torch.maximum(toward_high, toward_low)  # (B,)
        candidate = valid & (kept_role == Role.DROPPED)
        key = torch.where(candidate, distance, -math.inf)
        order = torch.sort(key, descending=True, stable=True).indices[:missing]
        supplemented[order] = True
        nearer_high = (toward_high[order] >= toward_low[order]) & (not low_only)
        kept_role[order] = torch.where(nearer_high, Role.Q2, Role.Q4)

    # Quadrants for reporting, by the mid thresholds of the last iterate.
    high_ppl = ppl > t.ppl_mid
    high_ent = ent > t.ent_mid
    quadrant[:] = torch.where(high_ppl, torch.where(high_ent, 1, 2), torch.where(high_ent, 4, 3))
    quadrant[~valid] = 0
    return _selection_from(kept_role, supplemented, quadrant, t, n, target), toward_high, toward_low


def _cap_q2_share(selection: SampleSelection, valid, toward_high, toward_low, share: float) -> None:
    """At most floor(share * kept) samples in the Q2 role, in place.

    The shallowest Q2 samples (closest to the diagonal) give way, one for one, to the not-kept samples
    deepest toward the low-PPL corner (Q4, marked supplemented). Fewer candidates than needed: as many
    swaps as there are.
    """
    role = selection.kept_role
    kept = int((role != Role.DROPPED).sum())
    q2 = (role == Role.Q2).nonzero().flatten()
    excess = len(q2) - math.floor(share * kept)
    candidates = (valid & (role == Role.DROPPED)).nonzero().flatten()
    swaps = min(max(0, excess), len(candidates))
    if swaps == 0:
        return
    shallow = q2[torch.sort(toward_high[q2], stable=True).indices[:swaps]]
    deep = candidates[torch.sort(toward_low[candidates], descending=True, stable=True).indices[:swaps]]
    role[shallow] = Role.DROPPED
    selection.supplemented[shallow] = False
    role[deep] = Role.Q4
    selection.supplemented[deep] = True


def _min_max(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Min-max normalise over the valid samples; a constant axis normalises to 0."""
    lo, hi = values[valid].min(), values[valid].max()
    if hi > lo:
        return (values - lo) / (hi - lo)
    return torch.zeros_like(values)


def smoothed_token_ppl(token_nll: torch.Tensor, loss_mask: torch.Tensor, smoothing: float) -> torch.Tensor:
    """s_i = (1 - lam) * ppl_i + lam * (ppl_{i-1} + ppl_{i+1}) at trainable positions, else 0; float64 (B, T).

    A neighbour that is not a trainable position (prompt, pad, the row's edge) contributes 0:
    note the SUM of the neighbours, not their mean (docs/algorithm.md section 4).

    Args:
        token_nll: (B, T) per-token NLL (clamped at 700 before exp, so ppl_i never overflows).
        loss_mask: (B, T) bool, the trainable positions.
        smoothing: lam, in [0, 1].

    Returns:
        (B, T) float64 smoothed perplexity s, 0 outside loss_mask.
    """
    token_ppl = torch.where(loss_mask, torch.exp(token_nll.double().clamp(max=_MAX_TOKEN_NLL)), 0.0)  # (B, T)
    left = torch.nn.functional.pad(token_ppl[:, :-1], (1, 0))  # ppl_{i-1}
    right = torch.nn.functional.pad(token_ppl[:, 1:], (0, 1))  # ppl_{i+1}
    smoothed = (1 - smoothing) * token_ppl + smoothing * (left + right)
    return torch.where(loss_mask, smoothed, 0.0)


def prune_tokens(
    token_nll: torch.Tensor,
    loss_mask: torch.Tensor,
    kept_role: torch.Tensor,
    cfg: QTuningConfig,
    attention_mask: torch.Tensor | None = None,
    *,
    prunable: torch.Tensor | None = None,
    priority: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stage 2 (docs/algorithm.md section 4): mask the highest-s tokens of the Q2 samples.

    The candidates are the trainable tokens of the prunable samples; with cfg.prune_direction="low" the
    lowest-s ones are masked instead. cfg.token_budget="per_sample" keeps max(1, floor(r_t * n)) of each
    sample's n candidates; "batch" keeps round(T_all * r_s * r_t) of the pool's T_all non-pad tokens.
    Ties go to the earlier token.

    Args:
        token_nll: Float64 (B, T) per-token NLL.
        loss_mask: Bool (B, T), the trainable positions.
        kept_role: (B,) Role values from stage 1.
        cfg: The settings (smoothing, token_ratio, token_budget, prune_direction, sample_ratio).
        attention_mask: Bool (B, T), the non-pad positions; needed with cfg.token_budget="batch".
        prunable: (B,) bool, the samples whose tokens may be pruned (default: the Q2 role).
        priority: (B, T) float, a baseline's pruning priority instead of the smoothed perplexity.

    Returns:
        token_keep bool (B, T) (the kept samples' trainable positions minus the pruned ones), the scores
        (B, T) float64 at the candidates (s, or the priority; 0 elsewhere), and the number of pruned tokens.
    """
    sample_keep = kept_role != Role.DROPPED  # (B,)
    if prunable is None:
        prunable = kept_role == Role.Q2
    candidate = loss_mask & prunable.unsqueeze(1)  # (B, T)
    base = smoothed_token_ppl(token_nll, loss_mask, cfg.smoothing) if priority is None else priority.double()
    score = torch.where(candidate, base, 0.0)
    token_keep = loss_mask & sample_keep.unsqueeze(1)  # (B, T)
    if cfg.token_ratio >= 1.0 or not candidate.any():
        return token_keep, score, 0

    # Candidates sorted so that the ones to prune come first; stable, so ties go to the earlier token.
    high_first = cfg.prune_direction == "high"
    key = torch.where(candidate, score, -math.inf if high_first else math.inf)
    if cfg.token_budget == "per_sample":
        num_candidates = candidate.sum(dim=1)  # (B,)
        keep_count = torch.clamp(torch.floor(cfg.token_ratio * num_candidates.double()), min=1).long()
        prune_count = torch.where(num_candidates > 0, num_candidates - keep_count, 0)  # (B,)
        order = torch.sort(key, dim=1, descending=high_first, stable=True).indices  # (B, T)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(key.shape[1]).expand_as(order).contiguous())
        pruned = candidate & (rank < prune_count.unsqueeze(1))
    else:  # "batch": one budget over the whole pool, as in the authors' code
        total = int(attention_mask.sum())
        target = round(total * cfg.sample_ratio * cfg.token_ratio)
        dropped_by_samples = int(attention_mask[~sample_keep].sum())
        prune_total = min(max(0, (total - target) - dropped_by_samples), int(candidate.sum()))
        flat_order = torch.sort(key.flatten(), descending=high_first, stable=True).indices[:prune_total]
        pruned = torch.zeros(key.numel(), dtype=torch.bool)
        pruned[flat_order] = True
        pruned = pruned.view_as(candidate) & candidate
    return token_keep & ~pruned, score, int(pruned.sum())


def _generator(seed: int | None, stream: int) -> torch.Generator | None:
    """An independent random stream per (seed, stream), so every rank draws the same numbers."""
    return None if seed is None else torch.Generator().manual_seed(derive_seed(seed, stream, "stream"))


def plan_pool(
    parts: list[ScoredBatch],
    cfg: QTuningConfig,
    wanted: list[int] | None = None,
    *,
    seed: int | None = None,
    progress: float = 0.0,
    window: ScoreWindow | None = None,
) -> dict[int, SelectionPlan]:
    """Plan a pool made of several batches (micro-batches, ranks), returned per part.

    The same plan as `plan_batch` on their concatenation, for the parts in `wanted`. With
    token_budget="per_sample" only the per-sample scores of the other parts are read, so they may come
    without token grids (token_nll None); the "batch" budget needs every part's grids.

    Args:
        parts: The pool's batches, checked (`prepare_scores`), in row order.
        cfg: The settings.
        wanted: Indices of the parts whose plans are returned (default: all).
        seed: Seeds the random draws of the baselines (the same seed gives the same plan on every rank);
            None draws from torch's global generator.
        progress: Fraction of training done, for InfoBatch's annealing.
        window: The run's score history (cfg.thresholds="history"), updated with this pool.

    Returns:
        Part index -> its SelectionPlan (its own rows and width; pool fields shared), for each of `wanted`.

    Raises:
        ScoreError: A sample with a trainable position has a NaN or inf PPL or Ent.
        ConfigError: cfg.thresholds="history" without a `window`.
        ValueError: cfg.token_pruner="rho1" and a part has no reference_nll.
    """
    wanted = list(range(len(parts))) if wanted is None else wanted
    scores = SampleScores(
        *(torch.cat([getattr(p.scores, f) for p in parts]) for f in ("ppl", "entropy", "num_tokens", "has_response"))
    )
    selection = select_pool(scores, cfg, _generator(seed, 0), progress, window)
    offsets = [0]
    for part in parts:
        offsets.append(offsets[-1] + part.scores.ppl.shape[0])
    if cfg.token_budget == "batch" and cfg.token_ratio < 1.0:
        whole = build_plan(concat_scored(parts), selection, cfg, _generator(seed, 1))
        return {i: whole.take(offsets[i], offsets[i + 1], parts[i].loss_mask.shape[1]) for i in wanted}
    return {
        i: build_plan(parts[i], selection.rows(offsets[i], offsets[i + 1]), cfg, _generator(seed, 2 + i))
        for i in wanted
    }
