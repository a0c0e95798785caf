"""`qtuning compare`: is the difference between two training recipes real, on your own evaluation?

The evidence suite's statistics (benchmarks/evidence/PLAN.md) for any two recipes A and B: train
each with the same seeds, evaluate every model with `qtuning eval --engine native -o FILE` (which
keeps each item's scores), then

    qtuning compare --a "evals/qtuning_s*.json" --b "evals/random_s*.json"

Run i of A pairs with run i of B (the files in natural order: s2 before s10), and every run must
have scored the same items; one B file (e.g. the untrained model, which has no seed) pairs with
every A run. For each task and metric the difference A - B is the mean over the paired seeds and
items, with a 95% interval from the two-way bootstrap of `qtuning.evaluation.bootstrap` (seeds and items
resampled independently), and the verdict the whole interval gives. A held-out NLL (`qtuning eval
--tasks nll=FILE`) is a ratio of sums (summed NLL over response tokens, per item) and lower is
better; with `--sesoi` a comparison has four outcomes, as the second evidence design's (A better,
B better, equivalent, undecided). Reads JSON; imports no torch.
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..data.run_files import SUMMARY_FILE
from ..errors import UsageError
from ..files import atomic_write_text, check_output_file
from .bootstrap import Interval, paired_difference, verdict
from .tasks import LOWER_IS_BETTER, TASKS

FEW_SEEDS = 3  # below this, a bootstrap over seeds understates their spread: the table says so


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
    sesoi: str = field(
        default="",
        metadata={
            "help": "Smallest effect of interest per metric, fixed before you look, in the table's units (points "
            "x100; nats/token for nll), e.g. `nll=0.01,exact_match=2`. A metric given one reads 'equivalent' "
            "when its whole interval lies inside +-SESOI and 'undecided' when the interval crosses 0 and reaches "
            "past a bound; without it such an interval reads 'no difference resolved'."
        },
    )
    resamples: int = field(default=10_000, metadata={"help": "Bootstrap resamples (seeded, so reruns agree)."})
    allow_mixed_settings: bool = field(
        default=False,
        metadata={
            "help": "Compare files evaluated under different scoring settings (engine, dtype, chat template, "
            "few-shot count, a task's generation length), which are refused by default: such a difference "
            "mixes the recipes with how they were scored. The table is printed with a warning naming them."
        },
    )
    output: str = field(default="", metadata={"help": "Also write the comparison as JSON to this file."})


@dataclass(frozen=True)
class Comparison:
    task: str
    metric: str
    a_mean: float  # over A's runs and the items, in `scale` units
    b_mean: float
    difference: Interval  # A - B, in `scale` units
    verdict: str
    scale: float = 100.0  # scores x100; 1 for a ratio of sums (a held-out NLL, nats/token)
    lower_is_better: bool = False
    sesoi: float | None = None  # the smallest effect of interest the verdict used, in `scale` units


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


def load_item_scores(
    path: str | Path,
) -> dict[str, tuple[list[str], dict[str, tuple[list[float], list[float] | None]]]]:
    """An eval JSON -> {task: (item ids, {metric: (per-item scores, per-item denominators)})}; the
    denominators are None for a plain mean (accuracy, EM) and the token counts for a ratio of sums
    (a held-out NLL: `nll` summed per item over `nll_tokens`). Errors name the file and field."""
    return _item_scores(_read_eval(path), Path(path))


def _read_eval(path: str | Path) -> dict:
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
    return result


def _item_scores(result, path: Path) -> dict[str, tuple[list[str], dict[str, tuple[list[float], list[float] | None]]]]:
    samples = result.get("samples") if isinstance(result, dict) else None
    if not samples:
        raise UsageError(
            f"{path}: no per-item scores (field 'samples'); write them with `qtuning eval --engine native -o {path}`"
        )
    out = {}
    for task, items in samples.items():
        ids = [str(item.get("id")) for item in items]
        metrics = {}
        table = result.get("tasks", {}).get(task) or {}
        for metric in table.keys():
            if metric == "n" or metric.endswith(("_stderr", "_tokens")):
                continue
            values = [item.get(metric) for item in items]
            bad = next((i for i, v in enumerate(values) if not isinstance(v, (int, float))), None)
            if bad is not None:
                raise UsageError(f"{path}: task {task}, item {ids[bad]}: metric {metric!r} is {values[bad]!r}")
            dens = None
            if f"{metric}_tokens" in table:  # a ratio of sums: each item's tokens weigh it
                dens = [item.get(f"{metric}_tokens") for item in items]
                bad = next((i for i, v in enumerate(dens) if not isinstance(v, (int, float)) or v <= 0), None)
                if bad is not None:
                    raise UsageError(
                        f"{path}: task {task}, item {ids[bad]}: {metric}_tokens is {dens[bad]!r} (a positive count)"
                    )
                dens = [float(v) for v in dens]
            metrics[metric] = ([float(v) for v in values], dens)
        out[task] = (ids, metrics)
    return out


# How a file was scored (`qtuning eval`'s "config" and "versions"). A difference in a SCORING setting
# changes the scores themselves (bf16 against fp32 logits, a shorter generation cut, another prompt
# format), so comparing across it mixes the recipes with the scoring: refused unless allowed. A
# CONTEXT difference rarely moves a score (another device, batch size, library version, or the same
# items read from another file) and is only noted. Files without these fields (older ones) are not checked.
SCORING_SETTINGS = ("engine", "dtype", "chat_template", "num_fewshot")
SCORING_TASK_SETTINGS = ("max_new_tokens",)
CONTEXT_SETTINGS = ("device", "batch_size")
CONTEXT_TASK_SETTINGS = ("records",)


@dataclass(frozen=True)
class SettingsDifference:
    """One setting the compared files do not share: its values, each with the files that hold it."""

    name: str  # e.g. "dtype", "max_new_tokens[arith]", "versions.torch"
    values: dict[str, list[str]]  # value (as text) -> the files
    scoring: bool  # True: it changes the scores (see SCORING_SETTINGS)

    def describe(self) -> str:
        parts = [
            f"{value} in {files[0]}" + (f" (+{len(files) - 1} more)" if len(files) > 1 else "")
            for value, files in self.values.items()
        ]
        return f"{self.name}: " + "; ".join(parts)


def settings_differences(results: dict[str, dict], tasks: list[str]) -> list[SettingsDifference]:
    """The settings on which the evaluation files differ: how each was scored (SCORING_SETTINGS and
    CONTEXT_SETTINGS, the compared tasks' own, the library versions) and, where the evaluated model is a
    `qtuning train` output folder, what it was trained with (its summary's environment: noted only).
    A setting a file does not record is not compared for that file.

    results: {path: the file's parsed JSON}; tasks: the tasks compared."""
    values: dict[str, dict[str, list[str]]] = {}  # setting -> value -> files
    scoring: dict[str, bool] = {}
    for path, result in results.items():
        for name, (value, changes_scores) in _settings_of(result, tasks).items():
            values.setdefault(name, {}).setdefault(value, []).append(path)
            scoring[name] = changes_scores
    return [SettingsDifference(name, by_value, scoring[name]) for name, by_value in values.items() if len(by_value) > 1]


def _settings_of(result: dict, tasks: list[str]) -> dict[str, tuple[str, bool]]:
    """{setting: (its value as text, whether it changes the scores)} of one evaluation file."""
    config = result.get("config") if isinstance(result.get("config"), dict) else {}
    out = {}
    # the nll task is scored natively under either engine (same code, same numbers)
    engine_matters = any(t not in TASKS or TASKS[t].kind != "nll" for t in tasks)
    for key in SCORING_SETTINGS + CONTEXT_SETTINGS:
        if key == "engine" and not engine_matters:
            continue
        if key in config:
            out[key] = (str(config[key]), key in SCORING_SETTINGS)
    for key in SCORING_TASK_SETTINGS + CONTEXT_TASK_SETTINGS:
        per_task = config.get(key)
        for task in tasks if isinstance(per_task, dict) else ():
            if task in per_task:
                out[f"{key}[{task}]"] = (str(per_task[task]), key in SCORING_TASK_SETTINGS)
    versions = result.get("versions")
    for name, value in versions.items() if isinstance(versions, dict) else ():
        out[f"versions.{name}"] = (str(value), False)
    for name, value in _trained_with(config.get("model")).items():
        out[f"trained with {name}"] = (str(value), False)
    return out


def _trained_with(model) -> dict[str, object]:
    """The main software and the device a `qtuning train` output folder was trained with (its summary's
    environment); {} for anything else (a built-in name, a folder without a summary, an older run)."""
    if not isinstance(model, str) or not (Path(model) / SUMMARY_FILE).is_file():
        return {}
    try:
        env = json.loads((Path(model) / SUMMARY_FILE).read_text()).get("environment")
    except (OSError, ValueError, AttributeError):
        return {}  # unreadable: nothing to note (the comparison itself does not depend on it)
    if not isinstance(env, dict):
        return {}
    packages = env.get("packages") if isinstance(env.get("packages"), dict) else {}
    out = {name: packages[name] for name in ("torch", "transformers", "trl", "peft") if name in packages}
    out["device"] = env.get("accelerator") or env.get("device")
    out["ranks"] = env.get("world_size")
    return out


def compare_runs(
    a_paths: list[str],
    b_paths: list[str],
    metrics: list[str] | None = None,
    resamples: int = 10_000,
    sesoi: dict[str, float] | None = None,
    allow_mixed_settings: bool = False,
) -> list[Comparison]:
    """Every task and metric all the files share, A - B paired by position (one B pairs with all).
    sesoi: {metric: smallest effect of interest in the table's units} for the four-outcome verdict.

    Raises:
        UsageError: the files cannot be paired or read, scored other items, share no task or metric,
            or were scored under different SCORING_SETTINGS (unless allow_mixed_settings)."""
    return _compare(a_paths, b_paths, metrics, resamples, sesoi, allow_mixed_settings)[0]


def _compare(
    a_paths: list[str],
    b_paths: list[str],
    metrics: list[str] | None = None,
    resamples: int = 10_000,
    sesoi: dict[str, float] | None = None,
    allow_mixed_settings: bool = False,
) -> tuple[list[Comparison], list[SettingsDifference]]:
    """compare_runs (its arguments and errors), plus the settings the files differ in
    (settings_differences), from one reading of the files: run_compare prints both."""
    if len(b_paths) != 1 and len(b_paths) != len(a_paths):
        raise UsageError(
            f"--a has {len(a_paths)} files and --b {len(b_paths)}: pair them one to one (same seeds), "
            "or give one B file to pair with every A run"
        )
    results = {p: _read_eval(p) for p in dict.fromkeys(a_paths + b_paths)}
    runs = {p: _item_scores(r, Path(p)) for p, r in results.items()}
    tasks = [t for t in runs[a_paths[0]] if all(t in r for r in runs.values())]
    if not tasks:
        raise UsageError("the files share no task: " + "; ".join(f"{p}: {', '.join(r)}" for p, r in runs.items()))
    differences = settings_differences(results, tasks)
    mixed = [d for d in differences if d.scoring]
    if mixed and not allow_mixed_settings:
        raise UsageError(
            "the files were scored under different settings, so a difference would mix the recipes with how "
            "they were scored: "
            + " | ".join(d.describe() for d in mixed)
            + "; evaluate every run the same way, or compare anyway with --allow_mixed_settings true"
        )
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
            a_grid = [runs[p][task][1][metric][0] for p in a_paths]  # (seeds, items)
            b_grid = [runs[p][task][1][metric][0] for p in b_paths]
            a_dens = [runs[p][task][1][metric][1] for p in a_paths]  # (seeds, items), or Nones
            b_dens = [runs[p][task][1][metric][1] for p in b_paths]
            ratio = all(x is not None for x in a_dens + b_dens)  # e.g. an NLL: in its own units, not x100
            if not ratio:
                a_dens = [[1.0] * len(ids) for _ in a_paths]
                b_dens = [[1.0] * len(ids) for _ in b_paths]
            d = paired_difference(a_grid, b_grid, a_dens, b_dens, resamples=resamples)
            scale = 1.0 if ratio else 100.0
            scaled = Interval(scale * d.mean, scale * d.low, scale * d.high, d.seeds, d.items)
            a_mean = scale * sum(map(sum, a_grid)) / sum(map(sum, a_dens))
            b_mean = scale * sum(map(sum, b_grid)) / sum(map(sum, b_dens))
            lower = metric in LOWER_IS_BETTER
            bound = (sesoi or {}).get(metric)
            out.append(
                Comparison(
                    task,
                    metric,
                    a_mean,
                    b_mean,
                    scaled,
                    verdict(scaled, "A", "B", not lower, bound),
                    scale,
                    lower,
                    bound,
                )
            )
    unused = set(sesoi or {}) - {r.metric for r in out}
    if unused:
        raise UsageError(
            f"--sesoi names {', '.join(sorted(unused))}, which no comparison has; compared: "
            f"{', '.join(dict.fromkeys(r.metric for r in out))}"
        )
    return out, differences


def parse_sesoi(spec: str) -> dict[str, float]:
    """ "nll=0.01,exact_match=2" -> {"nll": 0.01, "exact_match": 2.0}; a bad item is named."""
    out: dict[str, float] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        metric, sep, value = item.partition("=")
        try:
            bound = float(value) if sep and metric.strip() else None
        except ValueError:
            bound = None
        if bound is None or not bound > 0 or bound == float("inf"):
            raise UsageError(f"--sesoi: {item!r} is not METRIC=VALUE with a positive number (e.g. nll=0.01)")
        out[metric.strip()] = bound
    return out


def _verdict_words(r: Comparison, name_a: str, name_b: str) -> str:
    return {"A better": f"{name_a} better", "B better": f"{name_b} better"}.get(r.verdict, r.verdict)


def format_comparison(rows: list[Comparison], name_a: str, name_b: str) -> str:
    """A plain-text table; scores x100, a held-out NLL in nats/token (lower is better)."""
    table = [["task", "metric", name_a, name_b, f"{name_a} - {name_b}", "95% CI", "seeds", "items", "verdict"]]
    for r in rows:
        d, f = r.difference, (4 if r.scale == 1 else 2)
        sesoi = f" (SESOI {r.sesoi:g})" if r.sesoi is not None else ""
        table.append(
            [
                r.task,
                r.metric + (" (lower is better)" if r.lower_is_better else ""),
                f"{r.a_mean:.{f}f}",
                f"{r.b_mean:.{f}f}",
                f"{d.mean:+.{f}f}",
                f"[{d.low:+.{f}f}, {d.high:+.{f}f}]",
                str(d.seeds),
                str(d.items),
                _verdict_words(r, name_a, name_b) + sesoi,
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
    sesoi = parse_sesoi(cfg.sesoi)
    rows, differences = _compare(a_paths, b_paths, metrics, cfg.resamples, sesoi, cfg.allow_mixed_settings)
    pairs = [(a, b_paths[0]) for a in a_paths] if len(b_paths) == 1 else list(zip(a_paths, b_paths))
    print(f"[qtuning] compare {cfg.name_a} - {cfg.name_b}, paired runs:")
    for a, b in pairs:
        print(f"  {a}  <->  {b}")
    print(format_comparison(rows, cfg.name_a, cfg.name_b))
    print(
        f"[qtuning] scores x100, nll in nats/token; 95% intervals from a two-way bootstrap over seeds x items "
        f"({cfg.resamples} resamples, seeded 0); 'better' needs the whole interval on one side of 0"
        + ("; 'equivalent' needs it inside +-SESOI" if sesoi else "")
    )
    seeds = min((r.difference.seeds for r in rows), default=0)
    if seeds < FEW_SEEDS:
        print(
            f"[qtuning] {seeds} paired run(s): indicative only; a bootstrap over so few seeds understates how "
            f"much runs differ (use {FEW_SEEDS} or more)"
        )
    for d in differences:
        what = "WARNING: scored differently" if d.scoring else "note: the files differ in"
        print(f"[qtuning] {what}: {d.describe()}")
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
                    "units": "nats/token, lower is better" if r.lower_is_better else "score x100",
                    "sesoi": r.sesoi,
                }
                for r in rows
            ],
            "settings_differences": [
                {"setting": d.name, "values": d.values, "changes_scores": d.scoring} for d in differences
            ],
        }
        atomic_write_text(cfg.output, json.dumps(payload, indent=1) + "\n")
        print(f"[qtuning] wrote {cfg.output}")
    return rows
