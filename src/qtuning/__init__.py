"""qtuning: Q-Tuning (arXiv 2509.23873) data pruning for supervised fine-tuning.

Three ways in, all importable from here:

    from qtuning import QTuningSFTTrainer, QTuningSFTConfig   # a TRL SFTTrainer that prunes every step
    from qtuning import QTuner                                # three calls in your own training loop
    from qtuning import QTuningConfig, plan_batch             # the pure engine: scores in, a plan out

and, for a framework's own transformers Trainer, `QTuningTrainerMixin` with `QTuningTrainingConfig`
(`class T(QTuningTrainerMixin, TheirTrainer)`, `T(..., qtuning_config=QTuningTrainingConfig(...))`).
`RunConfig` (what `qtuning train` loads around the trainer: the model, the data, LoRA) comes from
here too. The engine (config, scoring, selection) is imported eagerly and needs only torch (the core
install: `pip install qtuning`); the trainers, their configs and QTuner are imported on first use
(module `__getattr__`), so `import qtuning` does not import transformers or trl. The trainers need an
extra (`pip install "qtuning[trl]"`); without it they raise MissingExtraError, which says so.
"""

import importlib
import importlib.abc
import importlib.util
import sys

from .engine.config import QTuningConfig
from .engine.scoring import (
    IGNORE_INDEX,
    SampleScores,
    TokenScores,
    sample_scores,
    shift_labels,
    shift_mask,
    token_scores_from_hidden,
    token_scores_from_logits,
)
from .engine.selection import (
    ROLE_DROPPED,
    ROLE_Q2,
    ROLE_Q4,
    Role,
    SampleSelection,
    SelectionPlan,
    plan_batch,
    prune_tokens,
    select_samples,
)
from .errors import ConfigError, MissingExtraError, QTuningError, ScoreError

__version__ = "0.1.0"

# Modules that moved into a folder: old path -> new path. The old path stays importable
# (`import qtuning.scoring`, `from qtuning.training.trainer import QTuningSFTTrainer`, pickles naming it) and
# gives the same module object; the new module is imported only when the old path is, so
# `import qtuning` stays light. Listed in CHANGELOG.md ("moved").
_MOVED = {
    "config": "engine.config",
    "training_config": "engine.training_config",
    "scoring": "engine.scoring",
    "thresholds": "engine.thresholds",
    "history": "engine.history",
    "policies": "engine.policies",
    "seeds": "engine.seeds",
    "signatures": "engine.signatures",
    "selection": "engine.selection",
    "probe": "modeling.probe",
    "kept_batch": "modeling.kept_batch",
    "padding_free": "modeling.padding_free",
    "qtuner": "modeling.qtuner",
    "builtin_data": "data.builtin",
    "procedural_data": "data.procedural",
    "assets": "data.assets",
    "models": "data.models",
    "plan_log": "data.plan_log",
    "row_ids": "data.row_ids",
    "run_files": "data.run_files",
    "bootstrap": "evaluation.bootstrap",
    "comparison": "evaluation.compare",
    "static_select": "insight.static_select",
    "plots": "insight.plots",
    "sft_config": "training.sft_config",
    "trainer": "training.trainer",
    "trainer_mixin": "training.trainer_mixin",
    "distributed": "training.distributed",
    "stale": "training.stale",
    "scoring_mode": "training.scoring_mode",
    "run_metrics": "training.run_metrics",
    "run": "training.run",
    "cli_args": "cli.args",
}


class _OldPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves `qtuning.<old>` to the module at its new path (one finder on sys.meta_path)."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname.removeprefix(__name__ + ".")
        if fullname.startswith(__name__ + ".") and old in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(f"{__name__}.{_MOVED[spec.name.removeprefix(__name__ + '.')]}")

    def exec_module(self, module):
        pass  # already executed under its new name


if not any(type(f).__name__ == "_OldPathFinder" for f in sys.meta_path):  # once, even after a reload
    sys.meta_path.append(_OldPathFinder())

# name -> the module that defines it, imported on first access
_LAZY = {
    "QTuningSFTTrainer": ".training.trainer",
    "QTuningTrainerMixin": ".training.trainer_mixin",
    "QTuningTrainingConfig": ".engine.training_config",
    "QTuningSFTConfig": ".training.sft_config",
    "RunConfig": ".training.sft_config",
    "QTuner": ".modeling.qtuner",
    "apply_plan": ".modeling.kept_batch",
    "loss_on_kept": ".modeling.kept_batch",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # the next access skips this function
        return value
    if name in _MOVED:  # `qtuning.scoring` as an attribute, as before the move
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ConfigError",
    "IGNORE_INDEX",
    "MissingExtraError",
    "QTuner",
    "QTuningConfig",
    "QTuningError",
    "QTuningSFTConfig",
    "QTuningSFTTrainer",
    "QTuningTrainerMixin",
    "QTuningTrainingConfig",
    "ROLE_DROPPED",
    "ROLE_Q2",
    "ROLE_Q4",
    "Role",
    "RunConfig",
    "SampleScores",
    "ScoreError",
    "SampleSelection",
    "SelectionPlan",
    "TokenScores",
    "apply_plan",
    "loss_on_kept",
    "plan_batch",
    "prune_tokens",
    "select_samples",
    "sample_scores",
    "shift_labels",
    "shift_mask",
    "token_scores_from_hidden",
    "token_scores_from_logits",
]
