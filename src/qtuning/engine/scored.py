"""From a batch's raw scores to the checked `ScoredBatch` a selection reads. Pure torch, no model code.

    batch = prepare_scores(token_nll, token_entropy, loss_mask, cfg, attention_mask=None)

`prepare_scores` checks the per-token scores (shapes, NaN/Inf; a bad row raises a ScoreError or is
dropped), moves them to the CPU in float64 and computes the per-sample PPL and Ent;
`concat_scored` joins several batches (micro-batches, ranks) into one pool. `qtuning.engine.selection`
plans from the result (and re-exports both names).
"""

from __future__ import annotations

import torch

from ..errors import ScoreError
from .config import QTuningConfig
from .scoring import SampleScores, sample_scores
from .types import ScoredBatch


def _check_inputs(token_nll, token_entropy, loss_mask, attention_mask, cfg: QTuningConfig) -> None:
    if token_nll.dim() != 2:
        raise ScoreError(f"token_nll must be (B, T), got shape {tuple(token_nll.shape)}")
    for name, t in (("token_entropy", token_entropy), ("loss_mask", loss_mask), ("attention_mask", attention_mask)):
        if t is not None and t.shape != token_nll.shape:
            raise ScoreError(f"{name} has shape {tuple(t.shape)}, expected {tuple(token_nll.shape)} like token_nll")
    if attention_mask is None and (cfg.token_budget == "batch" or cfg.entropy_positions == "all"):
        raise ScoreError(
            f'attention_mask is required with token_budget="{cfg.token_budget}" and '
            f'entropy_positions="{cfg.entropy_positions}" (non-pad positions, aligned with the scores)'
        )
    checks = [("token_nll", token_nll, loss_mask), ("token_entropy", token_entropy, loss_mask)]
    if cfg.entropy_positions == "all":
        checks.append(("token_entropy", token_entropy, attention_mask))
    for name, values, mask in checks:
        bad = mask & ~torch.isfinite(values)
        if bad.any():
            b, t = bad.nonzero()[0].tolist()
            raise ScoreError(
                f"{name} is not finite at {int(bad.sum())} scored position(s); first at sample {b}, "
                f"position {t}: {values[b, t].item()}. Refusing to select from broken scores "
                "(check the model's dtype or for a diverged run)."
            )


def prepare_scores(
    token_nll: torch.Tensor,
    token_entropy: torch.Tensor,
    loss_mask: torch.Tensor,
    cfg: QTuningConfig,
    attention_mask: torch.Tensor | None = None,
    non_finite: str = "raise",
) -> ScoredBatch:
    """Check the scores (shapes, NaN/Inf) and compute the per-sample PPL and Ent.

    Args:
        token_nll: Float (B, T) per-token NLL, aligned after the causal shift.
        token_entropy: Float (B, T) per-token entropy, aligned the same way.
        loss_mask: Bool (B, T), True at trainable positions.
        cfg: The settings (entropy_positions and token_budget are read).
        attention_mask: Bool (B, T), True at non-pad positions; needed for token_budget="batch" and
            entropy_positions="all".
        non_finite: What a row whose scores are NaN or inf at a scored position (or whose mean NLL
            overflows exp in float64) does: "raise" a ScoreError (the engine's default), or "drop" the
            row: it counts as having no trainable position in this pool (never kept, no part in the
            thresholds), and `non_finite_rows` says how many were dropped (the trainer's choice: one bad
            row does not end a run).

    Returns:
        The ScoredBatch on the CPU in float64 (bool masks), token_nll zeroed outside loss_mask, with its
        SampleScores.

    Raises:
        ScoreError: A tensor is not (B, T) like token_nll, attention_mask is missing where cfg needs it,
            or (with non_finite="raise") a score is not finite or a sample's perplexity overflows float64.
        ValueError: non_finite is neither "raise" nor "drop".
    """
    if non_finite not in ("raise", "drop"):
        raise ValueError(f"non_finite={non_finite!r} is not allowed: expected 'raise' or 'drop'")
    loss_mask = loss_mask.detach().to("cpu", torch.bool)
    attention_mask = None if attention_mask is None else attention_mask.detach().to("cpu", torch.bool)
    token_nll = token_nll.detach().to("cpu", torch.float64)
    token_entropy = token_entropy.detach().to("cpu", torch.float64)
    dropped = 0
    if non_finite == "drop" and _same_shapes(token_nll, token_entropy, loss_mask, attention_mask):
        bad = _non_finite_rows(token_nll, token_entropy, loss_mask, attention_mask, cfg)  # (B,)
        dropped = int(bad.sum())
        if dropped:
            loss_mask = loss_mask & ~bad.unsqueeze(1)
            token_nll = torch.where(bad.unsqueeze(1), 0.0, token_nll)
            token_entropy = torch.where(bad.unsqueeze(1), 0.0, token_entropy)
    _check_inputs(token_nll, token_entropy, loss_mask, attention_mask, cfg)
    # Only positions that the masks select are read, whatever the rest holds.
    token_nll = torch.where(loss_mask, token_nll, 0.0)
    scores = sample_scores(token_nll, token_entropy, loss_mask, attention_mask, cfg.entropy_positions)
    if not torch.isfinite(scores.ppl).all():
        b = int((~torch.isfinite(scores.ppl)).nonzero()[0])
        raise ScoreError(
            f"sample {b} has a perplexity that overflows float64 (mean token NLL "
            f"{float(token_nll[b][loss_mask[b]].mean()):.1f} nats): refusing to select from broken scores"
        )
    return ScoredBatch(
        token_nll=token_nll, loss_mask=loss_mask, attention_mask=attention_mask, scores=scores, non_finite_rows=dropped
    )


def _same_shapes(*tensors) -> bool:
    return len({tuple(t.shape) for t in tensors if t is not None}) == 1 and tensors[0].dim() == 2


def _non_finite_rows(token_nll, token_entropy, loss_mask, attention_mask, cfg: QTuningConfig) -> torch.Tensor:
    """(B,) bool: rows with a NaN/inf score at a scored position, or a mean NLL whose exp overflows float64."""
    bad = (loss_mask & ~(torch.isfinite(token_nll) & torch.isfinite(token_entropy))).any(dim=1)
    if cfg.entropy_positions == "all" and attention_mask is not None:
        bad |= (attention_mask & ~torch.isfinite(token_entropy)).any(dim=1)
    mean_nll = torch.where(loss_mask, torch.nan_to_num(token_nll), 0.0).sum(dim=1) / loss_mask.sum(dim=1).clamp(min=1)
    return bad | (mean_nll > 709.0)  # exp(709.78) is the largest float64


def concat_scored(parts: list[ScoredBatch]) -> ScoredBatch:
    """One batch made of several (B_i, T_i) batches, right-padded to the widest.

    Args:
        parts: The batches, in row order.

    Returns:
        A ScoredBatch of sum(B_i) rows and max(T_i) columns (padding: NLL 0, masks False); an optional
        tensor (attention_mask, reference_nll) is None unless every part has it; non_finite_rows is 0.
    """
    width = max(p.loss_mask.shape[1] for p in parts)

    def pad(t, value):
        return None if t is None else torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    attention = (
        None
        if any(p.attention_mask is None for p in parts)
        else torch.cat([pad(p.attention_mask, False) for p in parts])
    )
    scores = SampleScores(
        *(torch.cat([getattr(p.scores, f) for p in parts]) for f in ("ppl", "entropy", "num_tokens", "has_response"))
    )
    reference = (
        None if any(p.reference_nll is None for p in parts) else torch.cat([pad(p.reference_nll, 0.0) for p in parts])
    )
    return ScoredBatch(
        token_nll=torch.cat([pad(p.token_nll, 0.0) for p in parts]),
        loss_mask=torch.cat([pad(p.loss_mask, False) for p in parts]),
        attention_mask=attention,
        scores=scores,
        reference_nll=reference,
    )
