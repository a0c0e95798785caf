"""`scoring: auto`: measure probe and reuse steps on this hardware, then keep the cheaper one.

Probe mode (a no-grad forward over the batch, then forward+backward on the kept rows only) saves
compute where a step is compute-bound; where it is bound by kernel launches (a small model on a
GPU) the extra forward costs more than the kept rows save, and reuse mode (one forward with grad
over the whole batch, the loss masked) costs about what a full-data step costs. So: run the first
steps in each mode, time them, and keep the faster, so that a Q-Tuning step is never much slower
than the full-data step on that hardware. Pure Python: the trainer feeds it step times.

Schedule (step numbers are optimizer steps, 1-based): steps 1 .. W are warm-up in probe mode (not
timed: allocator, kernels and caches settle); then M steps in probe mode and M in reuse mode,
alternating; from then on the mode whose fastest measured step was faster. The fastest, not the
median: on a machine shared with other work, noise only ever adds time, so a mode's quickest step
is the best estimate of what it costs (a shared-CPU benchmark picked the slower mode by medians of 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ScoringModeChooser:
    warmup_steps: int = 1
    measured_steps: int = 3  # per mode
    probe_s: list[float] = field(default_factory=list)
    reuse_s: list[float] = field(default_factory=list)
    chosen: str | None = None

    def mode_for_step(self, step: int) -> str:
        """The mode optimizer step `step` (1-based) runs in."""
        if self.chosen is not None:
            return self.chosen
        if step <= self.warmup_steps:
            return "probe"
        return "probe" if (step - self.warmup_steps) % 2 == 1 else "reuse"

    def record(self, step: int, mode: str, seconds: float) -> str | None:
        """Feed the time of a finished step; returns the chosen mode once it is decided (once)."""
        if self.chosen is not None or step <= self.warmup_steps:
            return None
        (self.probe_s if mode == "probe" else self.reuse_s).append(seconds)
        if len(self.probe_s) >= self.measured_steps and len(self.reuse_s) >= self.measured_steps:
            probe, reuse = min(self.probe_s), min(self.reuse_s)
            self.chosen = "probe" if probe <= reuse else "reuse"
            return self.chosen
        return None

    def state_dict(self) -> dict:
        return {"probe_s": self.probe_s, "reuse_s": self.reuse_s, "chosen": self.chosen}

    def load_state_dict(self, state: dict) -> None:
        self.probe_s = list(state.get("probe_s", []))
        self.reuse_s = list(state.get("reuse_s", []))
        self.chosen = state.get("chosen")
