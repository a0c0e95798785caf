"""RunMetrics: the counts of a Q-Tuning run inside a trainer, and what is derived from them.

Two sums of the same counts: the window (since the last log; the `qtuning/*` log metrics) and the
totals (since the start of training; checkpointed, so a resumed run counts on, and the summary). Each
rank counts its own; `take_window` and `summary` sum over ranks through the `reduce` the trainer
passes (a function of a float64 tensor, summed over ranks; None on one process). Imports torch only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from ..data.run_files import SUMMARY_FILE  # noqa: F401  (re-exported: its old home)
from ..engine.selection import SelectionPlan

ESTIMATE_BASIS = "forward = 1, forward+backward = 3 per token position; full data = 3 x all positions"

Reduce = Callable[[torch.Tensor], torch.Tensor] | None
GROUP_KEY = "group:"  # totals "group:scored:<name>" / "group:kept:<name>" (group_field)
# Every count a rank adds. The sums over ranks are one all-reduce of a tensor with one entry per key, so
# every rank sends these keys, in this order, whether or not it counted each (a rank may drop no
# non-finite row, or probe nothing in a window, while another does). tests/test_row_groups.py checks
# that every key the trainer adds is here.
COUNT_KEYS = (
    *("plans", "samples", "kept", "supplemented", "converged", "iterations", "alpha", "beta"),
    *("scored_tokens", "scored_positions", "trainable_tokens", "kept_tokens", "positions", "q1", "q2", "q3", "q4"),
    *("trained_rows", "trained_tokens", "trained_positions", "probed_positions", "stale_rows", "non_finite_rows"),
    *("step_s", "scoring_s"),
)


class RunMetrics:
    """Window and total sums of the run's counts (plans, samples, kept tokens, positions, seconds, ...)."""

    def __init__(self):
        self.window: dict[str, float] = defaultdict(float)  # sums since the last log
        self.totals: dict[str, float] = defaultdict(float)  # sums since the start of training (resumable)
        self.groups: list[str] = []  # group_field: the groups whose totals are summed over ranks

    def _keys(self, with_groups: bool) -> list[str]:
        """The keys summed over ranks, the same list on every rank."""
        groups = [f"{GROUP_KEY}{kind}:{g}" for g in self.groups for kind in ("scored", "kept")] if with_groups else []
        return [*COUNT_KEYS, *groups]

    def add(self, **values: float) -> None:
        for key, value in values.items():
            self.window[key] += value
            self.totals[key] += value

    def add_plan(self, plan: SelectionPlan, attention: torch.Tensor, scored: bool) -> None:
        """The counts of one planned micro-batch; attention (B, T) on the shifted grid, on the CPU."""
        counts = {
            "plans": 1,
            "samples": plan.sample_keep.numel(),
            "kept": plan.num_kept,
            "supplemented": plan.num_supplemented,
            "converged": int(plan.converged),
            "iterations": plan.iterations,
            "alpha": plan.alpha,
            "beta": plan.beta,
            "scored_tokens": int(plan.num_trainable_tokens.sum()) if scored else 0,
            "scored_positions": int(attention.sum()) if scored else 0,
            "trainable_tokens": int(plan.num_trainable_tokens.sum()),
            "kept_tokens": plan.num_kept_tokens,
            "positions": int(attention.sum()),
        }
        for q in range(1, 5):
            counts[f"q{q}"] = int((plan.quadrant == q).sum())
        self.add(**counts)

    def start_groups(self, names: list[str]) -> None:
        """group_field: the groups counted from now on, the same sorted list on every rank (summary()
        sums their totals over ranks). A resumed run keeps the counts of these groups and drops any
        other group's (a checkpoint of a run with another group_field, or none: names = [])."""
        self.groups = sorted(names)
        keep = {f"{GROUP_KEY}{kind}:{g}" for g in self.groups for kind in ("scored", "kept")}
        for key in [k for k in self.totals if k.startswith(GROUP_KEY) and k not in keep]:
            del self.totals[key]

    def add_groups(self, groups: list[str], kept: list[bool]) -> None:
        """One planned micro-batch's samples, by group: into the totals only (a window's keys would differ
        between ranks)."""
        for group, was_kept in zip(groups, kept):
            self.totals[f"{GROUP_KEY}scored:{group}"] += 1
            self.totals[f"{GROUP_KEY}kept:{group}"] += bool(was_kept)

    def take_window(self, reduce: Reduce, device) -> dict[str, float]:
        """The window's sums over all ranks; the window starts again from zero."""
        window = _summed(self.window, reduce, device, self._keys(with_groups=False))
        self.window.clear()
        return window

    def load_totals(self, totals: dict[str, float]) -> None:
        """Resume: the totals a checkpoint saved."""
        self.totals = defaultdict(float, totals)

    def summed_totals(self, reduce: Reduce, device) -> dict[str, float]:
        """The totals summed over ranks (a collective: every rank calls it), for the summary and for a
        checkpoint: rank 0 saves them and, on resume, loads them while the other ranks start from zero."""
        return _summed(self.totals, reduce, device, self._keys(with_groups=True))

    def summary(self, reduce: Reduce, device, **fields) -> dict:
        """The end-of-training summary (qtuning_summary.json) from the totals over all ranks; `fields`
        are wall_clock_s, optimizer_steps, scoring_mode, output_dir, plan_log (in that order)."""
        totals = self.summed_totals(reduce, device)
        trained_pos = totals.get("trained_positions", 0.0)
        # Full-data training would run forward+backward (~3 forward passes) over every position we scored
        # (every position of every sample); we ran 1 forward there plus 3 on the kept rows.
        all_pos = totals.get("positions", 0.0)
        cost = totals.get("probed_positions", 0.0) + 3 * trained_pos
        return {
            "wall_clock_s": fields["wall_clock_s"],
            "optimizer_steps": fields["optimizer_steps"],
            "samples_scored": totals.get("samples", 0.0),
            "samples_trained": totals.get("trained_rows", 0.0),
            "trainable_tokens_scored": totals.get("scored_tokens", 0.0),
            "tokens_trained": totals.get("trained_tokens", 0.0),
            "positions_forwarded_with_grad": trained_pos,
            "positions_probed": totals.get("probed_positions", 0.0),  # by a separate no-grad forward
            "samples_selected_with_stale_scores": totals.get("stale_rows", 0.0),  # scoring="stale"
            "scoring_s": totals.get("scoring_s", 0.0),
            "scoring_mode": fields["scoring_mode"],
            "estimated_compute_vs_full_data": cost / max(1.0, 3 * all_pos),
            "estimate_basis": ESTIMATE_BASIS,
            "output_dir": fields["output_dir"],
            "plan_log": fields["plan_log"],
            **_by_group(totals),
        }

    def log_metrics(self, w: dict[str, float], stale: bool) -> dict[str, float]:
        """The `qtuning/*` log entries of a gathered window `w` (docs/how-a-step-runs.md lists them);
        {} for a window without plans. stale: add the share of samples selected with cached scores."""
        if not w.get("plans"):
            return {}
        plans, samples = w["plans"], max(1.0, w["samples"])
        out = {
            "qtuning/kept_sample_fraction": w.get("kept", 0) / samples,
            "qtuning/supplemented": w.get("supplemented", 0) / plans,
            "qtuning/alpha": w.get("alpha", 0) / plans,
            "qtuning/beta": w.get("beta", 0) / plans,
            "qtuning/bisection_iterations": w.get("iterations", 0) / plans,
            "qtuning/bisection_converged_share": w.get("converged", 0) / plans,
            "qtuning/kept_token_fraction": w.get("kept_tokens", 0) / max(1.0, w.get("trainable_tokens", 0)),
            "qtuning/tokens_scored": w.get("scored_tokens", 0),
            "qtuning/tokens_trained": w.get("trained_tokens", 0),
            "qtuning/tokens_scored_total": self.totals.get("scored_tokens", 0),
            "qtuning/tokens_trained_total": self.totals.get("trained_tokens", 0),
            "qtuning/scoring_time_share": w.get("scoring_s", 0) / max(1e-9, w.get("step_s", 0)),
        }
        if stale:  # the share of samples selected with cached (not fresh) scores
            out["qtuning/stale_sample_share"] = w.get("stale_rows", 0) / samples
        for q in range(1, 5):
            out[f"qtuning/quadrant_q{q}"] = w.get(f"q{q}", 0) / samples
        return out


def _by_group(totals: dict[str, float]) -> dict:
    """{"kept_share_by_group": {group: share of its scored samples kept}}, groups most scored first; {}
    without groups or before any was scored."""
    scored = {k.split(":", 2)[2]: v for k, v in totals.items() if k.startswith(f"{GROUP_KEY}scored:")}
    if not any(scored.values()):
        return {}
    order = sorted(scored, key=lambda g: (-scored[g], g))
    kept = {g: totals.get(f"{GROUP_KEY}kept:{g}", 0.0) for g in order}
    return {"kept_share_by_group": {g: kept[g] / scored[g] if scored[g] else None for g in order}}


def _summed(sums: dict[str, float], reduce: Reduce, device, keys: list[str]) -> dict[str, float]:
    """`sums` summed over ranks (one float64 all-reduce of `keys`, the same list on every rank; a key
    this rank did not count sends 0), by key; `sums` itself on one process. A key outside `keys` stays
    this rank's own."""
    if reduce is None:
        return dict(sums)
    values = reduce(torch.tensor([sums.get(k, 0.0) for k in keys], dtype=torch.float64, device=device))
    return {**sums, **{k: v for k, v in zip(keys, values.tolist()) if k in sums or v}}
