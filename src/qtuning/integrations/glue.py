"""The trainer class both framework integrations build: QTuningTrainerMixin on the framework's own trainer."""

from __future__ import annotations

from collections.abc import Callable

from ..engine.training_config import QTuningTrainingConfig


def mixin_trainer(
    base: type,
    settings: QTuningTrainingConfig,
    framework: str,
    name: str,
    on_init: Callable[[object], None] | None = None,
) -> type:
    """`class name(Instrumented, QTuningTrainerMixin, base)`, built with qtuning_config=settings unless the
    caller passes one; `on_init(trainer)` runs after construction. `Instrumented` goes first: the replay
    dump and the step-time benchmark, off unless asked for (integrations/instrument.py)."""
    from ..training.trainer_mixin import QTuningTrainerMixin
    from .instrument import Instrumented

    class FrameworkTrainer(Instrumented, QTuningTrainerMixin, base):
        qtuning_settings = settings
        qtuning_framework = framework
        qtuning_base = base  # the framework's class, for a second patch in the same process

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("qtuning_config", self.qtuning_settings)
            super().__init__(*args, **kwargs)
            if on_init is not None:
                on_init(self)

    FrameworkTrainer.__name__ = FrameworkTrainer.__qualname__ = name
    return FrameworkTrainer
