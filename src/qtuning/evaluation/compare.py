"""`qtuning compare`: is the difference between two training recipes real, on your own evaluation?

The evidence suite's statistics (benchmarks/evidence/PLAN.md) for any two recipes A and B: train
each with the same seeds, evaluate every model with `qtuning eval --engine native -o FILE` (which
keeps each item's scores), then

    qtuning compare --a "evals/qtuning_s*.json" --b "evals/random_s*.json"

Run i of A pairs with run i of B (the files in natural order: s2 before s10), and every run must
have scored the same items; one B file (e.g. the untrained model, which has no seed) pairs with
every A run. For each task and metric the difference A - B is the mean over the paired seeds and
items, with a 95% interval from the two-way bootstrap of `qtuning.evaluation.bootstrap` (seeds and items
resampled independently), and the verdict the whole interval gives. Reads JSON; imports no torch.
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..files import atomic_write_text, check_output_file
from .bootstrap import Interval, paired_difference, verdict


@dataclass
class CompareConfig:
    """Settings of `qtuning compare`."""

    a: str = field(
        default="",
        metadata={
            "help": "Recipe A's evaluations: `qtuning eval --engine native -o` files, comma-separated "
            "paths or quoted glob patterns, one file per seed."
        },
    )
    b: str = field(default="", metadata={"help": "Recipe B's evaluations, as --a; one file pairs with every A run."})
    name_a: str = field(default="A", metadata={"help": "What to call recipe A in the table."})
    name_b: str = field(default="B", metadata={"help": "What to call recipe B in the table."})
    metrics: str = field(
        default="", metadata={"help": "Comma-separated metrics to compare (default: every metric the files share)."}
    )
    resamples: int = field(default=10_000, metadata={"help": "Bootstrap resamples (seeded, so reruns agree)."})
    output: str = field(default="", metadata={"help": "Also write the comparison as JSON to this file."})


@dataclass(frozen=True)
class Comparison:
    task: str
    metric: str
    a_mean: float  # over A's runs and the items, x100
    b_mean: float
    difference: Interval  # A - B, x100
    verdict: str


def _natural_key(path: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def expand_paths(spec: str, flag: str) -> list[str]:
    """Comma-separated paths or glob patterns -> the files, each pattern's matches in natural order."""
    paths: list[str] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if glob.has_magic(item):
            matches = sorted(glob.glob(item), key=_natural_key)
            if not matches:
                raise UsageError(f"{flag}: the pattern {item!r} matches no file")
            paths += matches
        else:
            paths.append(item)
    if not paths:
        raise UsageError(f"{flag}: no evaluation file given")
    return paths


def load_item_scores(path: str | Path) -> dict[str, tuple[list[str], dict[str, list[float]]]]:
    """An eval JSON -> {task: (item ids, {metric: per-item scores})}; errors name the file and field."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such evaluation file")
    try:
        result = json.loads(path.read_text())
    except OSError as exc:  # no permission, a broken disk
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from exc
    samples = result.get("samples") if isinstance(result, dict) else None
    if not samples:
        raise UsageError(
            f"{path}: no per-item scores (field 'samples'); write them with `qtuning eval --engine native -o {path}`"
        )
    out = {}
    for task, items in samples.items():
        ids = [str(item.get("id")) for item in items]
        metrics = {}
        for metric in (result.get("tasks", {}).get(task) or {}).keys():
            if metric == "n" or metric.endswith("_stderr"):
                continue
            values = [item.get(metric) for item in items]
            bad = next((i for i, v in enumerate(values) if not isinstance(v, (int, float))), None)
            if bad is not None:
                raise UsageError(f"{path}: task {task}, item {ids[bad]}: metric {metric!r} is {values[bad]!r}")
            metrics[metric] = [float(v) for v in values]
        out[task] = (ids, metrics)
    return out


def compare_runs(
    a_paths: list[str], b_paths: list[str], metrics: list[str] | None = None, resamples: int = 10_000
) -> list[Comparison]:
    """Every task and metric all the files share, A - B paired by position (one B pairs with all)."""
    if len(b_paths) != 1 and len(b_paths) != len(a_paths):
        raise UsageError(
            f"--a has {len(a_paths)} files and --b {len(b_paths)}: pair them one to one (same seeds), "
            "or give one B file to pair with every A run"
        )
    runs = {p: load_item_scores(p) for p in dict.fromkeys(a_paths + b_paths)}
    tasks = [t for t in runs[a_paths[0]] if all(t in r for r in runs.values())]
    if not tasks:
        raise UsageError("the files share no task: " + "; ".join(f"{p}: {', '.join(r)}" for p, r in runs.items()))
    out = []
    for task in tasks:
        ids = runs[a_paths[0]][task][0]
        for p, r in runs.items():
            if r[task][0] != ids:
                other = r[task][0]
                k = next((i for i, (x, y) in enumerate(zip(ids, other)) if x != y), min(len(ids), len(other)))
                raise UsageError(
                    f"{p}: task {task} scored other items than {a_paths[0]} (first difference at item {k}: "
                    f"{other[k] if k < len(other) else 'none'} vs {ids[k] if k < len(ids) else 'none'}); "
                    "evaluate every run on the same records and --limit"
                )
        shared = [m for m in runs[a_paths[0]][task][1] if all(m in r[task][1] for r in runs.values())]
        wanted = shared if not metrics else [m for m in metrics if m in shared]
        if metrics and not wanted:
            raise UsageError(f"task {task}: none of the metrics {', '.join(metrics)}; it has {', '.join(shared)}")
        for metric in wanted:
            a_grid = [runs[p][task][1][metric] for p in a_paths]  # (seeds, items)
            b_grid = [runs[p][task][1][metric] for p in b_paths]
            d = paired_difference(a_grid, b_grid, resamples=resamples)
            scaled = Interval(100 * d.mean, 100 * d.low, 100 * d.high, d.seeds, d.items)
            a_mean = 100 * sum(map(sum, a_grid)) / (len(a_grid) * len(ids))
            b_mean = 100 * sum(map(sum, b_grid)) / (len(b_grid) * len(ids))
            out.append(Comparison(task, metric, a_mean, b_mean, scaled, verdict(d, "A", "B")))
    return out


def _verdict_words(r: Comparison, name_a: str, name_b: str) -> str:
    return {"A better": f"{name_a} better", "B better": f"{name_b} better"}.get(r.verdict, r.verdict)


def format_comparison(rows: list[Comparison], name_a: str, name_b: str) -> str:
    """A plain-text table; scores x100."""
    table = [["task", "metric", name_a, name_b, f"{name_a} - {name_b}", "95% CI", "seeds", "items", "verdict"]]
    for r in rows:
        d = r.difference
        table.append(
            [
                r.task,
                r.metric,
                f"{r.a_mean:.2f}",
                f"{r.b_mean:.2f}",
                f"{d.mean:+.2f}",
                f"[{d.low:+.2f}, {d.high:+.2f}]",
                str(d.seeds),
                str(d.items),
                _verdict_words(r, name_a, name_b),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in table
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def run_compare(cfg: CompareConfig) -> list[Comparison]:
    """`qtuning compare`: print the table (and write the JSON); returns the rows."""
    if cfg.output:  # before the bootstrap: fail in a second, not after the work
        check_output_file(cfg.output, "--output", UsageError)
    a_paths, b_paths = expand_paths(cfg.a, "--a"), expand_paths(cfg.b, "--b")
    metrics = [m.strip() for m in cfg.metrics.split(",") if m.strip()] or None
    rows = compare_runs(a_paths, b_paths, metrics, cfg.resamples)
    pairs = [(a, b_paths[0]) for a in a_paths] if len(b_paths) == 1 else list(zip(a_paths, b_paths))
    print(f"[qtuning] compare {cfg.name_a} - {cfg.name_b}, paired runs:")
    for a, b in pairs:
        print(f"  {a}  <->  {b}")
    print(format_comparison(rows, cfg.name_a, cfg.name_b))
    print(
        f"[qtuning] scores x100; 95% intervals from a two-way bootstrap over seeds x items "
        f"({cfg.resamples} resamples, seeded 0); a verdict needs the whole interval on one side of 0"
    )
    if cfg.output:
        payload = {
            "a": {"name": cfg.name_a, "files": a_paths},
            "b": {"name": cfg.name_b, "files": b_paths},
            "comparisons": [
                {
                    "task": r.task,
                    "metric": r.metric,
                    "a_mean": round(r.a_mean, 4),
                    "b_mean": round(r.b_mean, 4),
                    "difference": round(r.difference.mean, 4),
                    "ci95": [round(r.difference.low, 4), round(r.difference.high, 4)],
                    "seeds": r.difference.seeds,
                    "items": r.difference.items,
                    "verdict": _verdict_words(r, cfg.name_a, cfg.name_b),
                }
                for r in rows
            ],
        }
        atomic_write_text(cfg.output, json.dumps(payload, indent=1) + "\n")
        print(f"[qtuning] wrote {cfg.output}")
    return rows
