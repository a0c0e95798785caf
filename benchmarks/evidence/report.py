"""The evidence suite's report, from its finished cells only (benchmarks/results/evidence_cells/).

Writes benchmarks/results/evidence.json, one accuracy-against-compute plot per task
(benchmarks/results/evidence_<task>.png) and the evidence section of benchmarks/RESULTS.md
(between its markers; the rest of that file is left as it is). Statistics: PLAN.md's paired
two-way bootstrap (qtuning.evaluation.bootstrap). Run it alone with `python benchmarks/evidence/suite.py --report`.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from qtuning.evaluation.bootstrap import mean_interval, paired_difference, verdict  # noqa: E402
from qtuning.insight.stability import jaccard  # noqa: E402

CELLS = ROOT / "benchmarks" / "results" / "evidence_cells"
RESULTS = ROOT / "benchmarks" / "results"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
PLAN = "benchmarks/evidence/PLAN.md"
START, END = "<!-- evidence:start -->", "<!-- evidence:end -->"
TASK_ORDER = ["arith", "letters", "arc", "squad"]
SENSITIVITY_FACTOR = 4.0
MAIN_SEEDS = 5

COMPARISONS = [  # (A, B): A - B
    ("qtuning_25x50", "random_25x50"),
    ("qtuning_25x50", "full"),
    ("random_25x50", "full"),
    ("full", "zero_shot"),
    ("qtuning_25x50_3ep", "random_25x50_3ep"),
    ("qtuning_25x50_3ep", "full"),
    ("qtuning_12.5x50", "random_12.5x50"),
    ("qtuning_50x50", "random_50x50"),
    ("infobatch_25x50", "qtuning_25x50"),
    ("qtuning_25x100", "qtuning_25x50"),
    ("noisy_qtuning_25x50", "noisy_random_25x50"),
    ("noisy_full", "full"),
    ("noisy_qtuning_25x50", "qtuning_25x50"),
    # the threshold variants (PLAN.md change log, 2026-12-02 18:00)
    ("qtuning_hist_25x50", "qtuning_25x50"),
    ("qtuning_hist_25x50", "random_25x50"),
    ("qtuning_histnoise_25x50", "qtuning_25x50"),
    ("qtuning_histnoise_25x50", "random_25x50"),
    ("noisy_qtuning_hist_25x50", "noisy_qtuning_25x50"),
    ("noisy_qtuning_histnoise_25x50", "noisy_qtuning_25x50"),
    # the recheck failed, so the variants also meet the paper arm rerun from their own commit (2026-12-03 23:36)
    ("qtuning_hist_25x50", "qtuning_25x50_recheck"),
    ("qtuning_histnoise_25x50", "qtuning_25x50_recheck"),
    ("qtuning_25x50_recheck", "qtuning_25x50"),
]
PRIMARY = ("qtuning_25x50", "random_25x50")
ARM_ORDER = [
    "zero_shot",
    "full",
    "random_12.5x50",
    "qtuning_12.5x50",
    "random_25x50",
    "qtuning_25x50",
    "random_50x50",
    "qtuning_50x50",
    "infobatch_25x50",
    "qtuning_25x100",
    "random_25x50_3ep",
    "qtuning_25x50_3ep",
    "qtuning_hist_25x50",
    "qtuning_histnoise_25x50",
    "qtuning_25x50_recheck",
    "noisy_full",
    "noisy_random_25x50",
    "noisy_qtuning_25x50",
    "noisy_qtuning_hist_25x50",
    "noisy_qtuning_histnoise_25x50",
]


def load_cells() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(CELLS.glob("*.json"))]


def _grid(cells: list[dict], key: str) -> list[list[float]]:
    return [c[key] for c in sorted(cells, key=lambda c: c["seed"])]


def _paired(a_cells: list[dict], b_cells: list[dict], what: str):
    """Cells of A and B on the seeds both have (zero-shot pairs with all), as bootstrap grids."""
    if len(b_cells) == 1 and b_cells[0]["arm"] == "zero_shot":
        seeds = sorted(c["seed"] for c in a_cells)
        b_use = b_cells
    else:
        seeds = sorted({c["seed"] for c in a_cells} & {c["seed"] for c in b_cells})
        b_use = [c for c in b_cells if c["seed"] in seeds]
    a_use = [c for c in a_cells if c["seed"] in seeds]
    if not a_use or not b_use:
        return None
    if what == "metric":
        return paired_difference(_grid(a_use, "per_item"), _grid(b_use, "per_item"))
    return paired_difference(
        _grid(a_use, "nll_sum"), _grid(b_use, "nll_sum"), _grid(a_use, "nll_tokens"), _grid(b_use, "nll_tokens")
    )


def arm_summary(cells: list[dict], full_by_seed: dict[int, dict]) -> dict:
    scores = [100 * c["score"] for c in sorted(cells, key=lambda c: c["seed"])]
    interval = mean_interval(_grid(cells, "per_item"))
    out = {
        "mean": round(statistics.fmean(scores), 3),
        "std": round(statistics.stdev(scores), 3) if len(scores) > 1 else 0.0,
        "n": len(scores),
        "seeds": sorted(c["seed"] for c in cells),
        "per_seed": [round(s, 3) for s in scores],
        "ci95": [round(100 * interval.low, 3), round(100 * interval.high, 3)],
        "nll": round(statistics.fmean(c["nll"] for c in cells), 5),
        "train_s": round(statistics.fmean(c["train_s"] for c in cells), 1),
        "eval_s": round(statistics.fmean(c["eval_s"] for c in cells), 1),
    }
    trained = [c for c in cells if "summary" in c]
    if trained:
        out["positions_with_grad"] = round(
            statistics.fmean(c["summary"]["positions_forwarded_with_grad"] for c in trained)
        )
        out["samples_trained_fraction"] = round(
            statistics.fmean(
                c["summary"]["samples_trained"] / max(1.0, c["summary"]["samples_scored"]) for c in trained
            ),
            4,
        )
        out["tokens_trained"] = round(statistics.fmean(c["summary"]["tokens_trained"] for c in trained))
        ratios = [c["train_s"] / full_by_seed[c["seed"]]["train_s"] for c in trained if c["seed"] in full_by_seed]
        grads = [
            c["summary"]["positions_forwarded_with_grad"]
            / full_by_seed[c["seed"]]["summary"]["positions_forwarded_with_grad"]
            for c in trained
            if c["seed"] in full_by_seed
        ]
        # Response tokens that carried a loss: Random x Random halves every kept row's tokens,
        # Q-Tuning only the Q2 rows', so "25% x 50%" trains different token counts.
        loss_tokens = [
            c["summary"]["tokens_trained"] / full_by_seed[c["seed"]]["summary"]["tokens_trained"]
            for c in trained
            if c["seed"] in full_by_seed
        ]
        if ratios:  # paired with the same seed's full-data cell (same machine, same suite)
            out["train_s_ratio_to_full"] = round(statistics.fmean(ratios), 4)
            # Work sharing the 2 cores only ever adds time, so each arm's fastest cell is the best
            # estimate of its cost (PLAN.md change log, 2026-12-03).
            fastest_full = min(f["train_s"] for f in full_by_seed.values())
            out["train_s_fastest_ratio_to_full"] = round(min(c["train_s"] for c in trained) / fastest_full, 4)
            out["positions_with_grad_ratio_to_full"] = round(statistics.fmean(grads), 4)
            out["tokens_trained_ratio_to_full"] = round(statistics.fmean(loss_tokens), 4)
    else:
        out["train_s_ratio_to_full"] = 0.0
        out["train_s_fastest_ratio_to_full"] = 0.0
        out["positions_with_grad_ratio_to_full"] = 0.0
        out["tokens_trained_ratio_to_full"] = 0.0
    return out


def pairing_check(cells: list[dict]) -> dict:
    """Arms of the same task and seed must see the same sample ids in the same steps (one epoch = the
    first steps of a three-epoch run). Returns the count of pairs compared and any that differ."""
    by_key: dict[tuple[str, str, int], list[list[int]]] = {}
    for c in cells:
        if "plans" in c:
            data = "noisy" if c["arm"].startswith("noisy_") else "clean"
            by_key.setdefault((c["task"], data, c["seed"]), []).append((c["arm"], c["plans"]["order"]))
    compared, mismatches = 0, []
    for (task, _data, seed), runs in by_key.items():
        reference_arm, reference = runs[0]
        for arm, order in runs[1:]:
            n = min(len(order), len(reference))
            compared += 1
            if order[:n] != reference[:n]:
                mismatches.append(f"{task} seed {seed}: {arm} vs {reference_arm}")
    return {"pairs_compared": compared, "mismatches": mismatches}


def noise_meta() -> tuple[set[str], int]:
    """The noise study's corrupted training rows and its number of training rows (written by suite.py
    when it builds the noisy copy); nothing when it has not been built here."""
    meta_path = ROOT / ".evidence" / "arith" / "meta.json"
    if not meta_path.exists():
        return set(), 0
    meta = json.loads(meta_path.read_text())
    return set(meta["corrupted_ids"]), int(meta["train"])


def noise_summary(cells: list[dict], corrupted: set[str], rows: int) -> dict:
    """Per noisy arm and seed, from the plan logs: which share of the kept rows is corrupted, how often a
    corrupted (and a clean) row is kept when it is seen, and which share of corrupted (and clean)
    response tokens carried a loss; with the downstream score and NLL on the clean evaluation items.
    Full data logs no plans: it trains every row and token once, so its shares follow from the counts."""
    noisy = [c for c in cells if c["arm"].startswith("noisy_") and ("plans" in c or c["arm"] == "noisy_full")]
    if not noisy or not corrupted:
        return {}
    out: dict = {"corrupted_rows": len(corrupted), "per_arm": {}}
    for c in sorted(noisy, key=lambda c: (c["arm"], c["seed"])):
        entry = {"seed": c["seed"]}
        if "plans" not in c:  # full data
            entry.update(
                corrupted_rows_kept_share=round(len(corrupted) / rows, 4),
                corrupted_rows_kept_rate=1.0,
                clean_rows_kept_rate=1.0,
                corrupted_tokens_trained_share=1.0,
                clean_tokens_trained_share=1.0,
            )
        else:
            # corrupted? -> [times kept, times seen, response tokens trained, response tokens seen]
            counts = {True: [0, 0, 0, 0], False: [0, 0, 0, 0]}
            for row_id, (n_seen, n_kept, tok_seen, tok_trained) in c["plans"]["per_row"].items():
                acc = counts[row_id in corrupted]
                acc[0] += n_kept
                acc[1] += n_seen
                acc[2] += tok_trained
                acc[3] += tok_seen
            bad, clean = counts[True], counts[False]
            entry.update(
                corrupted_rows_kept_share=round(bad[0] / max(1, bad[0] + clean[0]), 4),
                corrupted_rows_kept_rate=round(bad[0] / max(1, bad[1]), 4),
                clean_rows_kept_rate=round(clean[0] / max(1, clean[1]), 4),
                corrupted_tokens_trained_share=round(bad[2] / max(1, bad[3]), 4),
                clean_tokens_trained_share=round(clean[2] / max(1, clean[3]), 4),
            )
        entry.update(score=round(100 * c["score"], 3), nll=round(c["nll"], 5))
        out["per_arm"].setdefault(c["arm"], []).append(entry)
    for arm, entries in out["per_arm"].items():
        out.setdefault("mean", {})[arm] = {
            k: round(statistics.fmean(e[k] for e in entries), 4) for k in entries[0] if k != "seed"
        }
        logged = [c for c in noisy if c["arm"] == arm and "plans" in c]
        if logged:  # per_row: [times seen, times kept, tokens seen, tokens trained]
            out["mean"][arm]["kept_rate_gap"] = corrupted_gap(logged, corrupted, kept=1, seen=0)
            out["mean"][arm]["tokens_trained_gap"] = corrupted_gap(logged, corrupted, kept=3, seen=2)
    return out


def corrupted_gap(arm_cells: list[dict], corrupted: set[str], kept: int, seen: int, resamples: int = 10_000) -> dict:
    """Corrupted minus clean rate (times kept / times seen with kept, seen = 1, 0 of a plan-log row;
    response tokens trained / seen with 3, 2), the mean over seeds, with a 95% interval from a two-way
    bootstrap like the plan's: seeds with replacement, and within each seed the corrupted rows and the
    clean rows with replacement, independently (seeded 0)."""
    ids = sorted(arm_cells[0]["plans"]["per_row"])
    groups = []  # per group: (S, n_rows) numerators and denominators
    for is_bad in (True, False):
        chosen = [i for i in ids if (i in corrupted) == is_bad]
        counts = np.array([[c["plans"]["per_row"][i] for i in chosen] for c in arm_cells], dtype=float)
        groups.append((counts[:, :, kept], counts[:, :, seen]))

    def gap(seed_pick, row_picks):  # seed_pick (R, S); row_picks per group (R, S, n): (R,) gaps
        rates = []
        for (num, den), rows in zip(groups, row_picks):
            n = num[seed_pick[..., None], rows].sum(-1)
            d = den[seed_pick[..., None], rows].sum(-1)
            rates.append(n / np.maximum(d, 1))  # (R, S)
        return (rates[0] - rates[1]).mean(-1)

    seeds = len(arm_cells)
    identity = np.arange(seeds)[None]
    point = gap(identity, [np.arange(num.shape[1])[None, None].repeat(seeds, 1) for num, _ in groups])[0]
    rng = np.random.default_rng(0)
    pick = rng.integers(0, seeds, (resamples, seeds))
    draws = gap(pick, [rng.integers(0, num.shape[1], (resamples, seeds, num.shape[1])) for num, _ in groups])
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"mean": round(float(point), 4), "ci95": [round(float(low), 4), round(float(high), 4)], "seeds": seeds}


def kept_rows(cell: dict) -> set[str]:
    """The training rows a cell kept at least once (plan log per_row: [seen, kept, tokens seen, trained])."""
    return {row for row, entry in cell["plans"]["per_row"].items() if entry[1] > 0}


def items_differing(a: dict, b: dict) -> int:
    """How many evaluation items two cells of one task scored differently."""
    return sum(x != y for x, y in zip(a["per_item"], b["per_item"], strict=True))


def recheck_summary(cells: list[dict]) -> dict:
    """PLAN.md change log 2026-12-02 18:00: arith qtuning_25x50 seed 0 rerun from the addendum's commit must
    give the original cell's per-item scores; if not, the addendum's arms are compared against paper arms
    rerun from that commit instead."""
    found = {c["arm"]: c for c in cells if c["task"] == "arith" and c["seed"] == 0}
    original, rerun = found.get("qtuning_25x50"), found.get("qtuning_25x50_recheck")
    if not original or not rerun:
        return {}
    differing = items_differing(original, rerun)
    nll_gap = max(abs(a - b) for a, b in zip(original["nll_sum"], rerun["nll_sum"], strict=True))
    return {
        "commits": [original.get("code_commit"), rerun.get("code_commit")],
        "items_differing": differing,
        "same_plans": original.get("plans") == rerun.get("plans"),
        "nll_sum_max_abs_difference": nll_gap,
        "passes": differing == 0,
    }


def rerun_reproducibility(cells: list[dict]) -> dict:
    """The paper's selection run twice, from the plan's commits and from the addendum's (qtuning_25x50 and
    its copy qtuning_25x50_recheck), at every task and seed both have: how often the two runs agree. The
    recheck's rule reads seed 0 of arith only; this is the whole picture, reported beside it."""
    originals = {(c["task"], c["seed"]): c for c in cells if c["arm"] == "qtuning_25x50"}
    out: dict = {}
    for rerun in sorted(cells, key=lambda c: (c["task"], c["seed"])):
        original = originals.get((rerun["task"], rerun["seed"]))
        if rerun["arm"] != "qtuning_25x50_recheck" or original is None:
            continue
        entry = out.setdefault(
            rerun["task"], {"seeds": 0, "same_plans": 0, "items_differing": [], "kept_rows_jaccard": []}
        )
        entry["seeds"] += 1
        entry["same_plans"] += original["plans"] == rerun["plans"]
        entry["items_differing"].append(items_differing(original, rerun))
        entry["kept_rows_jaccard"].append(round(jaccard(kept_rows(original), kept_rows(rerun)), 3))
    return out


def selection_consistency(cells: list[dict]) -> dict | None:
    """Does an arm keep the same rows whatever the seed? The mean Jaccard, over pairs of seeds, of the sets
    of training rows kept at least once, against what two independent uniform draws of the same size
    would give (k / (2N - k) for k of N rows). A selection that reads something real in the rows sits
    above chance; that says nothing yet about whether what it reads is worth training on."""
    kept = [kept_rows(c) for c in cells if "plans" in c]
    if len(kept) < 2:
        return None
    rows = len(cells[0]["plans"]["per_row"])
    size = statistics.fmean(len(k) for k in kept)
    if size >= rows:  # keeps everything (full data): nothing to compare
        return None
    pairs = [jaccard(a, b) for i, a in enumerate(kept) for b in kept[i + 1 :]]
    # which rows: the kept rate (times kept / times seen) per quarter of response length, shortest first
    length = {row: e[2] / e[0] for row, e in cells[0]["plans"]["per_row"].items()}
    by_length = sorted(length, key=lambda row: (length[row], row))
    quarter = {row: 4 * i // len(by_length) for i, row in enumerate(by_length)}
    kept_seen = [[0, 0] for _ in range(4)]
    for c in cells:
        for row, (n_seen, n_kept, _tok_seen, _tok_trained) in c["plans"]["per_row"].items():
            kept_seen[quarter[row]][0] += n_kept
            kept_seen[quarter[row]][1] += n_seen
    return {
        "seeds": len(kept),
        "rows": rows,
        "rows_kept_mean": round(size, 1),
        "mean_pairwise_jaccard": round(statistics.fmean(pairs), 4),
        "chance": round(size / (2 * rows - size), 4),
        "kept_rate_by_length_quarter": [round(k / max(1, n), 3) for k, n in kept_seen],
    }


def task_report(task: str, cells: list[dict]) -> dict:
    by_arm: dict[str, list[dict]] = {}
    for c in cells:
        by_arm.setdefault(c["arm"], []).append(c)
    full_by_seed = {c["seed"]: c for c in by_arm.get("full", [])}
    arms = {arm: arm_summary(by_arm[arm], full_by_seed) for arm in ARM_ORDER if arm in by_arm}
    out: dict = {"primary_metric": cells[0]["metric"], "eval_items": len(cells[0]["per_item"]), "arms": arms}
    if "full" in arms and "zero_shot" in arms:
        gap = arms["full"]["mean"] - arms["zero_shot"]["mean"]
        sd = arms["full"]["std"]
        out["sensitivity"] = {
            "full_minus_zero_shot": round(gap, 3),
            "full_seed_sd": sd,
            "full_seeds": arms["full"]["n"],
            "passes": bool(arms["full"]["n"] >= MAIN_SEEDS and gap > 0 and gap >= SENSITIVITY_FACTOR * sd),
            "rule": f"full - zero_shot >= {SENSITIVITY_FACTOR:g} x the full arm's seed sd, with {MAIN_SEEDS} seeds",
            "complete": arms["full"]["n"] >= MAIN_SEEDS,
        }
    paired: dict = {}
    for a, b in COMPARISONS:
        if a in by_arm and b in by_arm:
            metric = _paired(by_arm[a], by_arm[b], "metric")
            nll = _paired(by_arm[a], by_arm[b], "nll")
            if metric is None:
                continue
            paired[f"{a}-{b}"] = {
                "mean": round(100 * metric.mean, 3),
                "ci95": [round(100 * metric.low, 3), round(100 * metric.high, 3)],
                "n": metric.seeds,
                "items": metric.items,
                "verdict": verdict(metric, a, b),
                "nll_mean": round(nll.mean, 5),
                "nll_ci95": [round(nll.low, 5), round(nll.high, 5)],
            }
    out["paired"] = paired
    out["frontier"] = {axis: frontier(cost_points(arms, axis)) for axis in COST_AXES}
    consistency = {arm: selection_consistency(by_arm[arm]) for arm in arms}
    out["selection_consistency"] = {arm: v for arm, v in consistency.items() if v}
    key = f"{PRIMARY[0]}-{PRIMARY[1]}"
    if key in paired:
        p = paired[key]
        complete = p["n"] >= MAIN_SEEDS
        word = {f"{PRIMARY[0]} better": "Q-Tuning better", f"{PRIMARY[1]} better": "Random better"}.get(
            p["verdict"], "no difference resolved"
        )
        out["decision"] = {"comparison": key, "verdict": word, "complete": complete, "seeds": p["n"]}
    return out


COST_AXES = {  # arm summary key -> what it measures (the plots' two x axes)
    "train_s_fastest_ratio_to_full": "fastest training time",
    "positions_with_grad_ratio_to_full": "positions forwarded with grad",
}


def frontier(points: dict[str, tuple[float, float]]) -> list[str]:
    """The arms no other arm beats on both axes: {arm: (cost, mean score)} -> arms in rising cost,
    each with a higher mean than every arm that costs the same or less (means only; see the CIs)."""
    frontier_arms, best = [], float("-inf")
    for arm, (_, mean) in sorted(points.items(), key=lambda kv: (kv[1][0], -kv[1][1], kv[0])):
        if mean > best:
            frontier_arms.append(arm)
            best = mean
    return frontier_arms


def cost_points(arms: dict, key: str) -> dict[str, tuple[float, float]]:
    """{arm: (cost ratio to full data, mean)} on one cost axis (arm_summary gives full 1 and zero-shot
    0); arms without that cost, the noise study's, and the cross-commit recheck (a copy) are left out."""
    return {
        arm: (v[key], v["mean"])
        for arm, v in arms.items()
        if key in v and not arm.startswith("noisy_") and not arm.endswith("_recheck")
    }


def overall_verdict(tasks: dict) -> str:
    passing = [t for t, r in tasks.items() if r.get("sensitivity", {}).get("passes")]
    decided = {t: tasks[t]["decision"] for t in passing if tasks[t].get("decision", {}).get("complete")}
    lines = []
    for t, r in tasks.items():
        s = r.get("sensitivity")
        d = r.get("decision")
        state = (
            ("sensitivity " + ("passes" if s and s["passes"] else "pending" if not s or not s["complete"] else "FAILS"))
            if s
            else "sensitivity pending"
        )
        lines.append(f"{t}: {state}; {d['verdict'] + ' (' + str(d['seeds']) + ' seeds)' if d else 'no comparison yet'}")
    if len(decided) < 3:
        return (
            "PENDING: fewer than three tasks have passed the sensitivity check and finished 5 paired seeds of "
            "the main arms. " + "; ".join(lines)
        )
    wins = sum(d["verdict"] == "Q-Tuning better" for d in decided.values())
    losses = sum(d["verdict"] == "Random better" for d in decided.values())
    if wins >= 2 and losses == 0:
        head = "Q-Tuning beats Random"
    elif wins == 0:
        head = "Random is the better buy"
    else:
        head = "mixed"
    return f"{head} (Q-Tuning better on {wins}, Random better on {losses}, of {len(decided)} tasks). " + "; ".join(
        lines
    )


THREE_EPOCH = "qtuning_25x50_3ep-random_25x50_3ep"


def three_epoch_reading(tasks: dict) -> str:
    """The exploratory follow-up's reading (PLAN.md, 2026-12-03 18:05): with 5 paired seeds on every
    task, Q-Tuning vs Random at three epochs; beside the plan's verdict, never changing it."""
    pairs = {t: r["paired"].get(THREE_EPOCH) for t, r in tasks.items()}
    detail = "; ".join(
        f"{t} {p['mean']:+.2f} [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] ({p['n']} seeds)"
        for t, p in pairs.items()
        if p
    )
    if len(pairs) < 3 or any(p is None or p["n"] < MAIN_SEEDS for p in pairs.values()):
        return f"PENDING ({MAIN_SEEDS} paired seeds on every task needed): {detail or 'no cells yet'}"
    above = sum(p["ci95"][0] > 0 for p in pairs.values())
    below = sum(p["ci95"][1] < 0 for p in pairs.values())
    if above >= 2 and below == 0:
        head = "Q-Tuning better at three epochs"
    elif below >= 2 and above == 0:
        head = "Random better at three epochs"
    else:
        head = "not resolved"
    return f"{head} (CI above 0 on {above}, below 0 on {below}, of {len(pairs)} tasks): {detail}"


def spread_labels(anchors: list[tuple[float, float]], width: float = 0.16, height: float = 0.035) -> list[float]:
    """Where to put each point's label (axes fractions; the label starts just right of its point) so that no
    two labels overlap: from the lowest point up, a label sits at its point's height or just above every
    label already placed that it would overlap in x. Returns the labels' heights, in the anchors' order."""
    placed: list[tuple[float, float]] = []  # (x, label height) of the labels so far
    heights = [0.0] * len(anchors)
    for i in sorted(range(len(anchors)), key=lambda k: (anchors[k][1], anchors[k][0])):
        x, y = anchors[i]
        for other_x, other_y in sorted(placed, key=lambda p: p[1]):
            if abs(other_x - x) < width and other_y - height < y < other_y + height:
                y = other_y + height
        heights[i] = y
        placed.append((x, y))
    return heights


def plot_task(task: str, report: dict) -> str | None:
    arms = {a: v for a, v in report["arms"].items() if not a.startswith("noisy_")}
    if len(arms) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    colours = {"qtuning": "tab:blue", "random": "tab:orange", "full": "black", "zero": "grey", "infobatch": "tab:green"}
    for ax, key, label in [
        (axes[0], "train_s_fastest_ratio_to_full", "training wall-clock / full data (fastest cell of each)"),
        (axes[1], "positions_with_grad_ratio_to_full", "positions forwarded with grad / full data"),
    ]:
        points = cost_points(arms, key)
        on_frontier = [points[a] for a in report["frontier"][key]]
        if on_frontier:
            ax.step(*zip(*on_frontier), where="post", color="grey", linestyle="--", linewidth=0.8)
        for arm, (x, _) in points.items():
            v = arms[arm]
            colour = "tab:purple" if "_hist" in arm else colours.get(arm.split("_")[0], "tab:red")
            marker = "s" if arm.endswith("_3ep") else "x" if arm.endswith("x100") else "o"
            ax.errorbar(
                [x],
                [v["mean"]],
                yerr=[[v["mean"] - v["ci95"][0]], [v["ci95"][1] - v["mean"]]],
                fmt=marker,
                color=colour,
                capsize=3,
            )
        # labels after every point is drawn, so that the axes' limits are final
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        anchors = [((x - x0) / (x1 - x0), (arms[a]["mean"] - y0) / (y1 - y0)) for a, (x, _) in points.items()]
        for (arm, (x, _)), (ax_x, ax_y), label_y in zip(points.items(), anchors, spread_labels(anchors), strict=True):
            moved = label_y - ax_y > 0.01
            ax.annotate(
                arm,
                (x, arms[arm]["mean"]),
                xytext=(ax_x + 0.01, label_y + 0.01),
                textcoords="axes fraction",
                fontsize=7,
                arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.4} if moved else None,
            )
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{report['primary_metric']} x100 (95% CI: seeds x items)")
    fig.suptitle(f"{task}: accuracy against training cost (SmolLM2-135M-Instruct, LoRA, CPU)")
    fig.tight_layout()
    path = RESULTS / f"evidence_{task}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.relative_to(ROOT))


def render_markdown(result: dict) -> str:
    lines = [
        START,
        "## Evidence suite: can Q-Tuning tell what Random cannot?",
        "",
        f"Plan (frozen before the first cell): `{PLAN}`. Written by `benchmarks/evidence/suite.py` from "
        f"{result['cells']} finished cells; raw numbers in `results/evidence.json`, per-cell records in "
        "`results/evidence_cells/`. Scores x100; mean +- sd over seeds; CIs are 95% two-way bootstrap "
        '(seeds x evaluation items), paired by seed. Cost columns: "time / full" is the mean over seeds of '
        "the training wall-clock over the same seed's full-data cell; cells that shared the 2 cores with other "
        "work ran 2-7x slower, so \"fastest time / full\" (each arm's fastest cell over full data's fastest, "
        'plotted) is the better estimate; "grad positions / full" is exact, and "loss tokens / full" counts '
        "the response tokens that carried a loss (Random x Random halves every kept row's tokens, Q-Tuning "
        "only its Q2 rows').",
        "",
        f"**Verdict: {result['verdict']}**",
        "",
        "Three epochs, 5 paired seeds (an exploratory follow-up, PLAN.md 2026-12-03 18:05; it does not "
        f"change the verdict): {result['three_epoch_followup']}.",
        "",
    ]
    for task, r in result["tasks"].items():
        lines += [f"### {task} (primary metric: {r['primary_metric']}, {r['eval_items']} evaluation items)", ""]
        s = r.get("sensitivity")
        if s:
            lines += [
                f"Sensitivity: full - zero-shot = {s['full_minus_zero_shot']:+.2f} against a seed sd of "
                f"{s['full_seed_sd']:.2f} ({s['full_seeds']} seeds): "
                f"{'passes' if s['passes'] else 'pending' if not s['complete'] else 'FAILS'} ({s['rule']}).",
                "",
            ]
        lines += [
            "| arm | mean | sd | n | 95% CI | NLL | train s | time / full | fastest time / full "
            "| grad positions / full | loss tokens / full | samples trained |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for arm, v in r["arms"].items():
            ratio = v.get("train_s_ratio_to_full")
            fastest = v.get("train_s_fastest_ratio_to_full")
            grads = v.get("positions_with_grad_ratio_to_full")
            loss_tokens = v.get("tokens_trained_ratio_to_full")
            frac = v.get("samples_trained_fraction")
            lines.append(
                f"| {arm} | {v['mean']:.2f} | {v['std']:.2f} | {v['n']} | [{v['ci95'][0]:.1f}, {v['ci95'][1]:.1f}] | "
                f"{v['nll']:.4f} | {v['train_s']:.0f} | {'-' if ratio is None else f'{ratio:.3f}'} | "
                f"{'-' if fastest is None else f'{fastest:.3f}'} | "
                f"{'-' if grads is None else f'{grads:.3f}'} | "
                f"{'-' if loss_tokens is None else f'{loss_tokens:.3f}'} | {'-' if frac is None else f'{frac:.3f}'} |"
            )
        if r.get("frontier"):
            lines += [
                "",
                "On the frontier (no other arm is both cheaper and better on the mean score; CIs above): "
                + "; ".join(f"by {COST_AXES[axis]}, {', '.join(arms)}" for axis, arms in r["frontier"].items())
                + ".",
            ]
        if r["paired"]:
            lines += [
                "",
                "| comparison (A - B) | difference | 95% CI | seeds | verdict | NLL difference | NLL 95% CI |",
                "|---|---:|---|---:|---|---:|---|",
            ]
            for name, p in r["paired"].items():
                lines.append(
                    f"| {name} | {p['mean']:+.2f} | [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] | {p['n']} | "
                    f"{p['verdict']} | {p['nll_mean']:+.4f} | [{p['nll_ci95'][0]:+.4f}, {p['nll_ci95'][1]:+.4f}] |"
                )
        if r.get("selection_consistency"):
            lines += [
                "",
                "Selection consistency: the mean Jaccard, over pairs of seeds, of the training rows each arm kept "
                "(each seed has its own data order and pools), against two independent uniform draws of that size; "
                "and how often a row is kept when seen, per quarter of the rows by response length.",
                "",
                "| arm | seeds | rows kept (of rows) | Jaccard across seeds | chance | kept rate by length quarter "
                "(shortest ... longest) |",
                "|---|---:|---:|---:|---:|---|",
            ]
            for arm, v in r["selection_consistency"].items():
                lines.append(
                    f"| {arm} | {v['seeds']} | {v['rows_kept_mean']:.0f} ({v['rows']}) | "
                    f"{v['mean_pairwise_jaccard']:.3f} | {v['chance']:.3f} | "
                    + " / ".join(f"{x:.2f}" for x in v["kept_rate_by_length_quarter"])
                    + " |"
                )
        if r.get("plot"):
            lines += ["", f"![{task}: accuracy against compute]({Path(r['plot']).relative_to('benchmarks')})"]
        lines.append("")
    noise = result.get("noise") or {}
    if noise.get("mean"):
        lines += [
            "### Noise study (arith, 20% of the responses swapped)",
            "",
            f"{noise['corrupted_rows']} training rows carry another row's worked solution.",
            "",
            'Rates are means over seeds: a row\'s "kept rate" is the times it was kept over the times it was '
            "seen; a token share is the response tokens that carried a loss over those seen.",
            "",
            "The gaps are corrupted minus clean, with a 95% interval from a bootstrap over seeds and, within "
            "each seed, over the corrupted and the clean rows (below 0: the arm avoids swapped answers).",
            "",
            "| arm | corrupted share of kept rows | corrupted rows kept rate | clean rows kept rate | "
            "kept rate gap [95% CI] | corrupted tokens trained | clean tokens trained | token share gap [95% CI] "
            "| exact match | NLL |",
            "|---|---:|---:|---:|---|---:|---:|---|---:|---:|",
        ]

        def gap_text(g: dict | None) -> str:
            return "-" if not g else f"{g['mean']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]"

        for arm, m in noise["mean"].items():
            lines.append(
                f"| {arm} (n={len(noise['per_arm'][arm])}) | {m['corrupted_rows_kept_share']:.3f} | "
                f"{m['corrupted_rows_kept_rate']:.3f} | {m['clean_rows_kept_rate']:.3f} | "
                f"{gap_text(m.get('kept_rate_gap'))} | "
                f"{m['corrupted_tokens_trained_share']:.3f} | {m['clean_tokens_trained_share']:.3f} | "
                f"{gap_text(m.get('tokens_trained_gap'))} | {m['score']:.2f} | {m['nll']:.4f} |"
            )
        lines.append("")
    machines = result.get("probe_precision") or {}
    if machines:
        lines += [
            "Probe precision of the probing arms' cells (`probe_precision: auto` scores in bf16 on a CPU with "
            "native bf16, in fp32 elsewhere; machines recorded from 2026-12-03 17:54, "
            "`results/evidence_machines.jsonl`): "
            + "; ".join(
                f"{arm} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) for arm, counts in machines.items()
            )
            + ".",
            "",
        ]
    rc = result.get("recheck") or {}
    if rc:
        lines += [
            "Cross-commit recheck (arith qtuning_25x50 seed 0 rerun from the addendum's commit): "
            f"{rc['items_differing']} evaluation items differ, plans "
            f"{'identical' if rc['same_plans'] else 'DIFFER'}, largest NLL-sum difference "
            f"{rc['nll_sum_max_abs_difference']:.2e}: "
            + (
                "passes."
                if rc["passes"]
                else "FAILS, so the addendum compares against paper arms rerun from its commit."
            ),
            "",
        ]
    rr = result.get("rerun_reproducibility") or {}
    if rr:
        lines += [
            "The paper's selection run twice (qtuning_25x50 from the plan's commits, qtuning_25x50_recheck from "
            "the addendum's, different sessions and machines), per task: "
            + "; ".join(
                f"{task} {e['same_plans']} of {e['seeds']} seeds with identical plans, kept-row Jaccard "
                + "/".join(f"{j:.2f}" for j in e["kept_rows_jaccard"])
                + ", evaluation items differing "
                + "/".join(str(n) for n in e["items_differing"])
                for task, e in rr.items()
            )
            + ".",
            "",
        ]
    pc = result["pairing"]
    lines += [
        f"Pairing check (same sample ids in the same steps for every arm of a task and seed): "
        f"{pc['pairs_compared']} pairs compared, {len(pc['mismatches'])} mismatches"
        + (": " + "; ".join(pc["mismatches"]) if pc["mismatches"] else "")
        + ".",
        END,
    ]
    return "\n".join(lines) + "\n"


MACHINES = RESULTS / "evidence_machines.jsonl"


def probe_machines(cells: list[dict], records: list[dict]) -> dict:
    """Per probing arm (Q-Tuning's, InfoBatch's), how many cells scored in bf16 or fp32 (the suite's
    `probe_precision: auto` follows the CPU; PLAN.md change log 2026-12-03 19:06), from the machine
    records background.sh writes at each start: a cell belongs to the last record from before it
    started; cells older than every record are "not recorded"."""
    records = sorted(records, key=lambda r: r["from"])
    out: dict = {}
    for c in sorted(cells, key=lambda c: (c["task"], c["arm"], c["seed"])):
        if "qtuning" not in c["arm"] and "infobatch" not in c["arm"]:
            continue
        before = [r for r in records if r["from"] <= c.get("started", "")]
        probe = before[-1]["probe"] if before else "not recorded"
        counts = out.setdefault(c["arm"], {})
        counts[probe] = counts.get(probe, 0) + 1
    return out


def write_report() -> dict:
    cells = load_cells()
    tasks = {}
    for task in TASK_ORDER:
        mine = [c for c in cells if c["task"] == task]
        if mine:
            tasks[task] = task_report(task, mine)
            tasks[task]["plot"] = plot_task(task, tasks[task])
    result = {
        "plan": PLAN,
        "cells": len(cells),
        "tasks": tasks,
        "noise": noise_summary(cells, *noise_meta()),
        "pairing": pairing_check(cells),
        "recheck": recheck_summary(cells),
        "rerun_reproducibility": rerun_reproducibility(cells),
        "probe_precision": probe_machines(
            cells, [json.loads(line) for line in MACHINES.read_text().splitlines()] if MACHINES.exists() else []
        ),
        "verdict": overall_verdict(tasks),
        "three_epoch_followup": three_epoch_reading(tasks),
    }
    RESULTS_JSON = RESULTS / "evidence.json"
    RESULTS_JSON.write_text(json.dumps(result, indent=1) + "\n")
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Results\n"
    section = render_markdown(result)
    if START in text and END in text:
        text = text[: text.index(START)] + section.rstrip("\n") + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS_MD.write_text(text)
    write_selection_quality_downstream(tasks, result["recheck"], result["noise"])
    return result


VARIANT_ARMS = {"paper": "qtuning_25x50", "history": "qtuning_hist_25x50", "history_noise": "qtuning_histnoise_25x50"}
# each variant's name among selection_quality.py's static measurements (Jaccard, noise)
VARIANT_STATIC = {"paper": "paper", "history": "history", "history_noise": "history_supplement_low_ppl"}
SUITE_TASKS = ("arith", "letters", "arc")


def adoption_decision(quality: dict, tasks: tuple[str, ...] = SUITE_TASKS, seeds: int = MAIN_SEEDS) -> dict:
    """PLAN.md's adoption rule (change log 2026-12-02 18:00, read as its 2026-12-03 13:55 entry says): a threshold
    variant replaces the paper's selection as the default only if (a) its CI against the paper lies above 0
    on at least 2 tasks and below 0 on none, or (b) every CI contains 0 AND its Jaccard with the whole-data
    selection at pool 16 is >= 0.6 and above the paper's AND its corrupted share of the kept rows is below
    the paper's. Jaccard and noise are selection_quality.json's own figures. Pending until every variant
    has `seeds` paired seeds on every task."""
    downstream = quality.get("downstream", {})
    jaccard = {name: quality["jaccard_vs_whole"][VARIANT_STATIC[name]]["16"] for name in VARIANT_STATIC}
    corrupted = {name: quality["noise"][VARIANT_STATIC[name]]["corrupted_rows_kept_share"] for name in VARIANT_STATIC}
    checks, qualified = {}, []
    for name in ("history", "history_noise"):
        entries = [downstream.get(t, {}).get(name) for t in tasks]
        if not all(e and "ci95_vs_paper" in e and e.get("paired_seeds", e["n"]) >= seeds for e in entries):
            done = sum(e.get("paired_seeds", e["n"]) if e and "ci95_vs_paper" in e else 0 for e in entries)
            checks[name] = {"complete": False, "seeds_done": done, "seeds_needed": seeds * len(tasks)}
            continue
        above = sum(e["ci95_vs_paper"][0] > 0 for e in entries)
        below = sum(e["ci95_vs_paper"][1] < 0 for e in entries)
        rule_a = above >= 2 and below == 0
        rule_b = (
            above == 0
            and below == 0
            and jaccard[name] >= 0.6
            and jaccard[name] > jaccard["paper"]
            and corrupted[name] < corrupted["paper"]
        )
        checks[name] = {
            "complete": True,
            "tasks_ci_above_0": above,
            "tasks_ci_below_0": below,
            "jaccard_pool16": jaccard[name],
            "corrupted_share_of_kept": corrupted[name],
            "adopt_by": "a" if rule_a else "b" if rule_b else None,
        }
        if rule_a or rule_b:
            qualified.append(name)
    measured = (
        f"Jaccard with the whole-data selection at pool 16: paper {jaccard['paper']:.3f}, history "
        f"{jaccard['history']:.3f}, history + low-PPL supplement {jaccard['history_noise']:.3f}; corrupted share "
        f"of the kept rows on noisy arith: paper {corrupted['paper']:.3f}, history {corrupted['history']:.3f}, "
        f"history + low-PPL supplement {corrupted['history_noise']:.3f}"
    )
    warm = quality.get("jaccard_vs_whole_warm_window", {}).get("history", {}).get("16")
    ceiling = quality.get("jaccard_ceiling_fixed_budget", {}).get("16")
    if warm is not None and ceiling is not None:
        measured += (
            f" (history's Jaccard is {warm:.3f} once its window is full, as in a later epoch; any selection held to "
            f"round(r_s N) rows per pool reaches at most {ceiling:.3f})"
        )
    if not all(c["complete"] for c in checks.values()):
        waiting = ", ".join(
            f"{n} {c['seeds_done']}/{c['seeds_needed']}" for n, c in checks.items() if not c["complete"]
        )
        reason = (
            f"thresholds: pool (the paper) stays the default for now: the addendum's downstream cells are not all "
            f"finished (paired seeds done: {waiting}). {measured}. The adoption rule is in {PLAN}."
        )
        return {"default": "paper", "status": "pending", "checks": checks, "reason": reason}
    # (a) beats (b); among equals, more tasks won, then the plain history variant (one option fewer)
    qualified.sort(key=lambda n: (checks[n]["adopt_by"] != "a", -checks[n]["tasks_ci_above_0"], n != "history"))
    if qualified:
        name = qualified[0]
        reason = (
            f"{name} becomes the default by rule ({checks[name]['adopt_by']}) of {PLAN}'s adoption rule. {measured}."
        )
        return {"default": name, "status": "decided", "checks": checks, "reason": reason}
    summary = "; ".join(
        f"{n}: CI above 0 on {c['tasks_ci_above_0']}, below 0 on {c['tasks_ci_below_0']} of {len(tasks)} tasks"
        for n, c in checks.items()
    )
    reason = (
        f"thresholds: pool (the paper) stays the default: no variant meets {PLAN}'s adoption rule ({summary}). "
        f"{measured}. The variants stay options."
    )
    return {"default": "paper", "status": "decided", "checks": checks, "reason": reason}


def paper_arm_for_variants(recheck: dict) -> str:
    """The arm the threshold variants are judged against (PLAN.md change log 2026-12-02 18:00): the plan's
    own qtuning_25x50 cells if the cross-commit recheck reproduced them, else the paper's selection rerun
    from the variants' commit (the arm qtuning_25x50_recheck, every task and seed)."""
    return "qtuning_25x50_recheck" if recheck and not recheck["passes"] else "qtuning_25x50"


def noise_in_training(noise: dict) -> dict:
    """Each variant's kept rows over whole training runs on noisy arith (the static "noise" entry is the
    untrained model's first-step view): corrupted share of the kept rows and of the tokens trained, and
    the corrupted-minus-clean kept-rate gap with its interval."""
    out = {}
    for name, clean_arm in {**VARIANT_ARMS, "random": "random_25x50"}.items():
        arm = "noisy_" + clean_arm  # the noise study's arms are the clean arms' recipes on noisy data
        m = (noise.get("mean") or {}).get(arm)
        if m:
            out[name] = {
                "corrupted_rows_kept_share": m["corrupted_rows_kept_share"],
                "corrupted_tokens_trained_share": m["corrupted_tokens_trained_share"],
                "clean_tokens_trained_share": m["clean_tokens_trained_share"],
                "kept_rate_gap": m.get("kept_rate_gap"),
                "seeds": len(noise["per_arm"][arm]),
            }
    return out


def write_selection_quality_downstream(tasks: dict, recheck: dict, noise: dict) -> None:
    """The threshold variants on the suite's tasks, into selection_quality.json (its static parts are
    written by benchmarks/selection_quality.py): per task and variant, the mean and the paired CI
    against the paper's selection (`paper_arm_for_variants`), the noise study's kept rows per variant;
    then the adoption rule's decision."""
    path = RESULTS / "selection_quality.json"
    if not path.exists():
        return
    quality = json.loads(path.read_text())
    paper_arm = paper_arm_for_variants(recheck)
    downstream: dict = {}
    for task, r in tasks.items():
        for name, arm in {**VARIANT_ARMS, "paper": paper_arm}.items():
            if arm not in r["arms"]:
                continue
            entry = {"mean": r["arms"][arm]["mean"], "n": r["arms"][arm]["n"]}
            paired = r["paired"].get(f"{arm}-{paper_arm}")
            if paired:
                entry["ci95_vs_paper"] = paired["ci95"]
                entry["difference_vs_paper"] = paired["mean"]
                entry["paired_seeds"] = paired["n"]
            downstream.setdefault(task, {})[name] = entry
    quality["downstream"] = downstream
    if noise:
        quality["noise_in_training"] = noise_in_training(noise)
    quality["downstream_paper_arm"] = paper_arm
    decision = adoption_decision(quality)
    quality["default"] = decision["default"]
    quality["default_reason"] = decision["reason"]
    quality["adoption"] = {"status": decision["status"], "checks": decision["checks"]}
    path.write_text(json.dumps(quality, indent=1) + "\n")


if __name__ == "__main__":
    write_report()
