"""The baselines the paper compares Q-Tuning with, behind one interface. Pure torch.

Everything here works on one selection pool, like Q-Tuning itself, and under the same budget:
a sample pruner keeps K = min(N, max(1, round(sample_ratio * N))) of the pool's N samples that
have a trainable position (Q-Tuning's supplement target), and a token pruner ranks the
trainable tokens of the kept samples; the token budget of docs/algorithm.md section 4 (per_sample
or batch) then decides how many of them lose their loss. Any sample pruner pairs with any
token pruner (`QTuningConfig.sample_pruner` x `QTuningConfig.token_pruner`).

Sample pruners (besides "qtuning", docs/algorithm.md section 3, and "none"):
- random:    K samples drawn uniformly;
- longest:   drop the longest: keep the K samples with the fewest trainable (response) tokens;
- entropy:   keep the K samples with the highest mean token entropy;
- infobatch: InfoBatch (Qin et al., ICLR 2024) at a fixed budget. Samples whose loss (mean
             token NLL) is below the pool's mean are the "well learned" ones: the samples at or
             above the mean are kept first, the below-mean ones are drawn at random to fill the
             budget, and the drawn ones have their loss rescaled by (number below the mean) /
             (number drawn), InfoBatch's 1 / (1 - prune probability), so the gradient stays an
             unbiased estimate. When the above-mean samples alone exceed K, K of them are drawn
             and rescaled the same way. Annealing: in the last `infobatch_anneal` fraction of
             training nothing is pruned. (InfoBatch reads the loss of the sample's previous
             epoch; here it is the probe's loss of the current model, like Q-Tuning's scores.)

Token pruners give each candidate token a priority, highest pruned first (prune_direction="low"
reverses every ranking):
- qtuning: the neighbour-smoothed perplexity s_i (computed in `qtuning.engine.selection`);
- ppl:     the token's own perplexity (no smoothing);
- random:  uniform noise;
- rho1:    minus the excess loss, nll - nll_ref, against a frozen reference model (by default
           the initial model): Rho-1 keeps the tokens with the highest excess loss.
"""

from __future__ import annotations

import torch

from .config import SAMPLE_PRUNERS  # the one list of names, checked by QTuningConfig

# which sample / token pruners read the probe's scores (the others need only the masks)
SCORED_SAMPLE_PRUNERS = ("qtuning", "entropy", "infobatch")
SCORED_TOKEN_PRUNERS = ("qtuning", "ppl", "rho1")

_MAX_TOKEN_NLL = 700.0  # exp() overflows float64 above ~709.78


def target_count(num_valid: int, sample_ratio: float) -> int:
    """K = min(N, max(1, round(r_s * N))), Python's round (half to even).

    Args:
        num_valid: N, the pool's samples with a trainable position.
        sample_ratio: r_s.

    Returns:
        K, the number of samples a pool keeps.
    """
    return min(num_valid, max(1, round(sample_ratio * num_valid)))


def needs_scores(sample_pruner: str, token_pruner: str) -> bool:
    """Whether a method needs the probe (a no-grad forward) or only the batch's masks.

    Args:
        sample_pruner: A QTuningConfig.sample_pruner value.
        token_pruner: A QTuningConfig.token_pruner value.

    Returns:
        True where either pruner reads the probe's scores.
    """
    return sample_pruner in SCORED_SAMPLE_PRUNERS or token_pruner in SCORED_TOKEN_PRUNERS


def baseline_keep(
    method: str,
    ppl: torch.Tensor,
    entropy: torch.Tensor,
    num_tokens: torch.Tensor,
    valid: torch.Tensor,
    sample_ratio: float,
    *,
    generator: torch.Generator | None = None,
    progress: float = 0.0,
    infobatch_anneal: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples a baseline sample pruner keeps in one pool, and their loss weights.

    Args:
        method: The sample pruner: "none", "random", "longest", "entropy" or "infobatch".
        ppl: (B,) float64 per-sample PPL.
        entropy: (B,) float64 per-sample entropy.
        num_tokens: (B,) int64 trainable tokens per sample.
        valid: (B,) bool, has a trainable position (the others are never kept).
        sample_ratio: r_s, the budget K = min(N, max(1, round(r_s * N))).
        generator: Drives the random draws ("random", "infobatch").
        progress: Fraction of training done, in [0, 1] (InfoBatch's annealing).
        infobatch_anneal: The final fraction of training that keeps every sample, unweighted.

    Returns:
        keep (B,) bool and weight (B,) float64 (1 where not rescaled).

    Raises:
        ValueError: An unknown method.
    """
    batch = valid.shape[0]
    keep = torch.zeros(batch, dtype=torch.bool)
    weight = torch.ones(batch, dtype=torch.float64)
    index = valid.nonzero().flatten()  # (N,)
    n = index.numel()
    if n == 0:
        return keep, weight
    k = target_count(n, sample_ratio)

    def draw(rows: torch.Tensor, count: int) -> torch.Tensor:
        return rows[torch.randperm(rows.numel(), generator=generator)[:count]]

    if method == "none":
        chosen = index
    elif method == "random":
        chosen = draw(index, k)
    elif method == "longest":  # drop the longest = keep the shortest; ties to the lower index
        chosen = index[torch.argsort(num_tokens[index], stable=True)[:k]]
    elif method == "entropy":
        chosen = index[torch.argsort(entropy[index], descending=True, stable=True)[:k]]
    elif method == "infobatch":
        if progress >= 1.0 - infobatch_anneal:
            chosen = index  # annealing: the full pool, unweighted
        else:
            loss = torch.log(ppl[index])  # mean token NLL
            below = loss < loss.mean()
            hard, easy = index[~below], index[below]
            if hard.numel() >= k:
                chosen = draw(hard, k)
                weight[chosen] = hard.numel() / k
            else:
                fill = k - hard.numel()
                drawn = draw(easy, fill)
                weight[drawn] = easy.numel() / fill
                chosen = torch.cat([hard, drawn])
    else:
        raise ValueError(f"unknown sample pruner {method!r}: expected one of {', '.join(SAMPLE_PRUNERS)}")
    keep[chosen] = True
    return keep, weight


def token_priority(
    method: str,
    token_nll: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    reference_nll: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pruning priority of every trainable token, (B, T) float64, highest pruned first (0 elsewhere).

    Args:
        method: The token pruner: "ppl", "random" or "rho1".
        token_nll: (B, T) float NLL on the shifted grid.
        loss_mask: (B, T) bool, the trainable positions.
        generator: Drives "random".
        reference_nll: (B, T) float NLL of the reference model on the same grid; needed by "rho1".

    Returns:
        (B, T) float64 priority at the trainable positions, 0 elsewhere.

    Raises:
        ValueError: An unknown method, or "rho1" without reference_nll.
    """
    nll = token_nll.double()
    if method == "ppl":
        priority = torch.exp(nll.clamp(max=_MAX_TOKEN_NLL))
    elif method == "random":
        priority = torch.rand(nll.shape, generator=generator, dtype=torch.float64)
    elif method == "rho1":
        if reference_nll is None:
            raise ValueError("token_pruner='rho1' needs the reference model's token NLL (reference_nll)")
        priority = -(nll - reference_nll.double())  # low excess loss: pruned first
    else:
        raise ValueError(f"token_priority: unknown token pruner {method!r}: expected ppl, random or rho1")
    return torch.where(loss_mask, priority, 0.0)
