"""qtuning: Q-Tuning (arXiv 2509.23873) data pruning for supervised fine-tuning.

The pure engine is importable without any model code:

    from qtuning import QTuningConfig, plan_batch
"""

from .config import ConfigError, QTuningConfig
from .scoring import (
    IGNORE_INDEX,
    SampleScores,
    TokenScores,
    sample_scores,
    shift_labels,
    shift_mask,
    token_scores_from_hidden,
    token_scores_from_logits,
)
from .selection import (
    ROLE_DROPPED,
    ROLE_Q2,
    ROLE_Q4,
    SampleSelection,
    ScoreError,
    SelectionPlan,
    plan_batch,
    prune_tokens,
    select_samples,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "IGNORE_INDEX",
    "QTuningConfig",
    "ROLE_DROPPED",
    "ROLE_Q2",
    "ROLE_Q4",
    "SampleScores",
    "ScoreError",
    "SampleSelection",
    "SelectionPlan",
    "TokenScores",
    "plan_batch",
    "prune_tokens",
    "select_samples",
    "sample_scores",
    "shift_labels",
    "shift_mask",
    "token_scores_from_hidden",
    "token_scores_from_logits",
]
