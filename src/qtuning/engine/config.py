"""QTuningConfig: every knob of the Q-Tuning engine, its default and its check, in one place.

The `help` text in each field's metadata is what `--help`, the YAML recipes and the docs show
(the same convention as `transformers.HfArgumentParser`). This module imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..errors import ConfigError

TOKEN_BUDGETS = ("per_sample", "batch")
PRUNE_DIRECTIONS = ("high", "low")
ENTROPY_POSITIONS = ("response", "all")
KEPT_QUADRANTS = ("q2_q4", "q1_q4", "q2_q3")
PRUNE_TOKENS_IN = ("q2", "q2_q4")
THRESHOLD_SOURCES = ("pool", "history")
SUPPLEMENT_TOWARD = ("nearest", "low_ppl")
# implemented in qtuning.engine.policies (which imports these names; this module imports nothing heavy)
SAMPLE_PRUNERS = ("qtuning", "none", "random", "longest", "entropy", "infobatch")
TOKEN_PRUNERS = ("qtuning", "none", "random", "ppl", "rho1")
SELECTION_POOLS = ("micro_batch", "global", "accumulation")  # QTuningTrainingConfig.selection_pool (distributed)


@dataclass
class QTuningConfig:
    """Settings of Q-Tuning's two-stage selection (docs/algorithm.md sections 3 and 4).

    Built with keyword arguments, one per field (`QTuningConfig(sample_ratio=0.25, token_ratio=0.5)`);
    each field's `help` metadata says what it does and what it allows (docs/configuration.md lists them
    all). Every value is checked at construction.

    Raises:
        ConfigError: At construction, a field's value is not allowed (a ratio outside its range, a name
            not among its choices, a count below 1); the message names the field, the value and what is
            allowed.
    """

    sample_ratio: float = field(
        default=0.25,
        metadata={
            "help": "Target fraction of the selection pool kept for training (r_s), in (0, 1]. "
            "The bisection aims at it; the supplement tops the kept set up to round(r_s * N)."
        },
    )
    token_ratio: float = field(
        default=0.5,
        metadata={
            "help": "Fraction of trainable tokens kept inside each Q2 (misconception) sample (r_t), "
            "in (0, 1]. 1 disables token pruning."
        },
    )
    smoothing: float = field(
        default=0.5,
        metadata={
            "help": "Neighbour smoothing lambda in [0, 1]: s_i = (1 - lambda) * ppl_i + "
            "lambda * (ppl_{i-1} + ppl_{i+1}). 0 scores each token alone."
        },
    )
    token_budget: str = field(
        default="per_sample",
        metadata={
            "help": "How the token budget is counted: 'per_sample' (the paper: each Q2 sample keeps "
            "max(1, floor(r_t * n)) of its n trainable tokens) or 'batch' (the authors' code: "
            "one global budget round(T_all * r_s * r_t) over the non-pad tokens of the pool)."
        },
    )
    prune_direction: str = field(
        default="high",
        metadata={
            "help": "Which tokens of a Q2 sample are pruned: 'high' (the highest smoothed perplexity, "
            "the paper's method) or 'low' (the lowest: the 'reversed' ablation)."
        },
    )
    entropy_positions: str = field(
        default="response",
        metadata={
            "help": "Positions averaged into a sample's entropy: 'response' (trainable positions, the "
            "paper) or 'all' (every non-pad position, prompt included: the authors' code)."
        },
    )
    sample_pruner: str = field(
        default="qtuning",
        metadata={
            "help": "Which samples of a pool are trained on: 'qtuning' (the EU-plane bisection), or a "
            "baseline at the same budget round(sample_ratio * N): 'random', 'longest' (drop the longest "
            "responses), 'entropy' (keep the highest entropy), 'infobatch' (keep the above-mean loss, "
            "subsample and rescale the rest, anneal at the end), or 'none' (keep every sample)."
        },
    )
    token_pruner: str = field(
        default="qtuning",
        metadata={
            "help": "Which tokens of the token-prunable kept samples lose their loss: 'qtuning' (highest "
            "neighbour-smoothed perplexity), 'ppl' (highest own perplexity), 'random', 'rho1' (lowest "
            "excess loss against the initial model), or 'none'. With sample_pruner='qtuning' only the Q2 "
            "samples are token-pruned (see prune_tokens_in); with a baseline sample pruner, every kept sample."
        },
    )
    kept_quadrants: str = field(
        default="q2_q4",
        metadata={
            "help": "Ablation: the two corners of the EU plane Q-Tuning keeps: 'q2_q4' (the method: "
            "misconceptions and calibration data), 'q1_q4' (high-PPL high-entropy instead of Q2) or "
            "'q2_q3' (low-PPL low-entropy instead of Q4). The high-PPL corner is the token-pruned one."
        },
    )
    prune_tokens_in: str = field(
        default="q2",
        metadata={
            "help": "Ablation: which Q-Tuning-kept samples are token-pruned: 'q2' (the method) or 'q2_q4' "
            "(both kept corners)."
        },
    )
    infobatch_anneal: float = field(
        default=0.125,
        metadata={
            "help": "sample_pruner='infobatch' only: the final fraction of training steps that trains on "
            "every sample, unweighted (InfoBatch's annealing), in [0, 1]."
        },
    )
    bisection_max_iters: int = field(
        default=10,
        metadata={"help": "Maximum number of bisection iterations of the quantile search (>= 1)."},
    )
    bisection_tolerance: float = field(
        default=0.01,
        metadata={"help": "The bisection stops once |kept fraction - sample_ratio| is below this (> 0)."},
    )
    bisection_upper: float = field(
        default=0.49,
        metadata={
            "help": "Upper bound of the quantile level searched, in (0, 0.5] "
            "(0.49 in Algorithm 1 and the code, 0.5 in the text)."
        },
    )
    thresholds: str = field(
        default="pool",
        metadata={
            "help": "Where the EU plane's quantile lines come from: 'pool' (the paper: the selection pool's own "
            "samples) or 'history' (the last `history_window` scored samples, the pool included; the pool is "
            "then held to exactly round(r_s * N) samples, corner samples first: docs/algorithm.md section 3.5)."
        },
    )
    history_window: int = field(
        default=512,
        metadata={
            "help": "thresholds='history' only: how many recent scored samples the lines are computed from (>= 1)."
        },
    )
    supplement_toward: str = field(
        default="nearest",
        metadata={
            "help": "Which samples top the kept set up to its target count: 'nearest' (the paper: the deepest toward "
            "either kept corner, each taking that corner's role) or 'low_ppl' (a noise-aware ablation: the deepest "
            "toward the low-PPL corner, kept whole as Q4)."
        },
    )
    max_q2_share: float = field(
        default=1.0,
        metadata={
            "help": "A noise-aware ablation: at most this share of the kept samples in the Q2 (token-pruned, "
            "high-PPL) role, in [0, 1]; the shallowest Q2 samples beyond it give way to the deepest low-PPL "
            "candidates. 1 = no cap (the paper)."
        },
    )

    def __post_init__(self) -> None:
        _check_ratio("sample_ratio", self.sample_ratio, low_open=True)
        _check_ratio("token_ratio", self.token_ratio, low_open=True)
        _check_ratio("smoothing", self.smoothing, low_open=False)
        _check_choice("token_budget", self.token_budget, TOKEN_BUDGETS)
        _check_choice("prune_direction", self.prune_direction, PRUNE_DIRECTIONS)
        _check_choice("entropy_positions", self.entropy_positions, ENTROPY_POSITIONS)
        _check_choice("sample_pruner", self.sample_pruner, SAMPLE_PRUNERS)
        _check_choice("token_pruner", self.token_pruner, TOKEN_PRUNERS)
        _check_choice("kept_quadrants", self.kept_quadrants, KEPT_QUADRANTS)
        _check_choice("prune_tokens_in", self.prune_tokens_in, PRUNE_TOKENS_IN)
        _check_ratio("infobatch_anneal", self.infobatch_anneal, low_open=False)
        _check_choice("thresholds", self.thresholds, THRESHOLD_SOURCES)
        _check_choice("supplement_toward", self.supplement_toward, SUPPLEMENT_TOWARD)
        _check_ratio("max_q2_share", self.max_q2_share, low_open=False)
        if isinstance(self.history_window, bool) or not isinstance(self.history_window, int) or self.history_window < 1:
            raise ConfigError(f"history_window={self.history_window!r} is not allowed: expected an integer >= 1")
        if (
            isinstance(self.bisection_max_iters, bool)
            or not isinstance(self.bisection_max_iters, int)
            or self.bisection_max_iters < 1
        ):
            raise ConfigError(
                f"bisection_max_iters={self.bisection_max_iters!r} is not allowed: expected an integer >= 1"
            )
        if not _is_real(self.bisection_tolerance) or not self.bisection_tolerance > 0:
            raise ConfigError(f"bisection_tolerance={self.bisection_tolerance!r} is not allowed: expected a number > 0")
        if not _is_real(self.bisection_upper) or not 0 < self.bisection_upper <= 0.5:
            raise ConfigError(f"bisection_upper={self.bisection_upper!r} is not allowed: expected a number in (0, 0.5]")

    @classmethod
    def field_names(cls) -> list[str]:
        """The names of the settings.

        Returns:
            The dataclass fields' names, in declaration order.
        """
        return [f.name for f in dataclasses.fields(cls)]


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_ratio(name: str, value: object, *, low_open: bool) -> None:
    if low_open:
        ok = _is_real(value) and 0 < value <= 1  # type: ignore[operator]
        allowed = "a number in (0, 1]"
    else:
        ok = _is_real(value) and 0 <= value <= 1  # type: ignore[operator]
        allowed = "a number in [0, 1]"
    if not ok:
        raise ConfigError(f"{name}={value!r} is not allowed: expected {allowed}")


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"{name}={value!r} is not allowed: expected one of {choices}")
