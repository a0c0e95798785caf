"""The second design's report (benchmarks/evidence/PLAN_v2.md), from its finished cells only.

Writes benchmarks/results/evidence_v2.json. Statistics (PLAN_v2.md, "Statistics"): the paired
two-way bootstrap of the first design (qtuning.evaluation.bootstrap) with four outcomes against a smallest
effect of interest, and beside it a two-way random-effects ANOVA interval (seeds x items,
Satterthwaite degrees of freedom) as a sensitivity check. `power_table()` gives the minimum
detectable effects that the plan quotes, from the first design's three-epoch cells.

    python benchmarks/evidence/report_v2.py          # rewrite evidence_v2.json
    python benchmarks/evidence/report_v2.py --power  # print the power table of PLAN_v2.md
    python benchmarks/evidence/report_v2.py --markdown  # the tables of RESULTS.md, from evidence_v2.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).parent))

from qtuning.evaluation.bootstrap import Interval, paired_difference, verdict  # noqa: E402

CELLS = ROOT / "benchmarks" / "results" / "evidence_v2_cells"
V1_CELLS = ROOT / "benchmarks" / "results" / "evidence_cells"
RESULTS_JSON = ROOT / "benchmarks" / "results" / "evidence_v2.json"
PAUSES = ROOT / "benchmarks" / "results" / "evidence_v2_pauses.jsonl"
CAP_H = 16.0  # PLAN_v2.md, "Budget and order": machine time for the whole design
PLAN = "benchmarks/evidence/PLAN_v2.md"

SESOI = {"nll": 0.01, "em": 0.02}  # nats per token; exact match / accuracy as a fraction (2 points)
PRIMARY = ("qtuning_25x50", "random_25xR")
COMPARISONS = [  # (A, B): A - B, per pool
    PRIMARY,
    ("qtuning_25x50", "random_25x50"),
    ("random_25xR", "random_25x50"),
    ("qtuning_Sx100", "random_25xR"),
    ("qtuning_Sx100", "qtuning_25x50"),
    ("qtuning_25x50", "full"),
    ("random_25xR", "full"),
    ("full", "zero_shot"),
]
ARM_ORDER = ["zero_shot", "full", "qtuning_25x50", "random_25xR", "random_25x50", "qtuning_Sx100"]
LABEL = {"qtuning_25x50": "Q-Tuning", "random_25xR": "Random", "qtuning_Sx100": "the variant"}


# ------------------------------------------------------------------------------------------- statistics
def anova_interval(a_num, b_num, a_den=None, b_den=None) -> dict:
    """Mean of A - B with a 95% interval from a two-way random-effects ANOVA (seeds x items).

    The per-item difference d[s, i] is put on the scale of the ratio of sums: (a_num - b_num) /
    the mean denominator, so its grand mean equals the bootstrap's estimate when both arms share
    their denominators (the same reference tokens). Var(mean) = (MS_seed + MS_item - MS_error) /
    (S x I), the sum of the three components' contributions; degrees of freedom by Satterthwaite."""
    from scipy import stats

    a_num, b_num = np.atleast_2d(np.asarray(a_num, float)), np.atleast_2d(np.asarray(b_num, float))
    if b_num.shape[0] == 1 and a_num.shape[0] > 1:
        b_num = np.repeat(b_num, a_num.shape[0], 0)
    den = 1.0 if a_den is None else float(np.mean(np.concatenate([np.ravel(a_den), np.ravel(b_den)])))
    d = (a_num - b_num) / den  # (S, I)
    s, i = d.shape
    grand = d.mean()
    seed_means, item_means = d.mean(axis=1), d.mean(axis=0)
    ms_item = s * ((item_means - grand) ** 2).sum() / max(1, i - 1)
    if s == 1:  # items only
        var, df = ms_item / (s * i), i - 1
    else:
        ms_seed = i * ((seed_means - grand) ** 2).sum() / (s - 1)
        resid = d - seed_means[:, None] - item_means[None, :] + grand
        ms_err = (resid**2).sum() / ((s - 1) * (i - 1))
        combined = max(ms_seed + ms_item - ms_err, ms_err)
        var = combined / (s * i)
        spread = ms_seed**2 / (s - 1) + ms_item**2 / (i - 1) + ms_err**2 / ((s - 1) * (i - 1))
        df = combined**2 / spread if spread > 0 else float(s * i - 1)  # identical differences: a zero-width CI
    half = float(stats.t.ppf(0.975, df)) * float(np.sqrt(var))
    return {"mean": float(grand), "ci95": [float(grand - half), float(grand + half)], "df": float(df)}


def outcome(low: float, high: float, sesoi: float, better: str, worse: str, lower_is_better: bool) -> str:
    """PLAN_v2.md's four outcomes for A - B: '<A> better', '<B> better', 'equivalent' (the CI inside
    +-SESOI), or 'undecided'. A CI that excludes 0 decides the direction even when it also lies
    inside the bounds (the entry's `within_sesoi` says so). The rule is the library's
    (`qtuning.evaluation.bootstrap.verdict` with a sesoi), which `qtuning compare --sesoi` applies too."""
    return verdict(Interval(0.0, low, high, 0, 0), better, worse, not lower_is_better, sesoi)


def compare(a_cells: list[dict], b_cells: list[dict], a_name: str, b_name: str) -> dict | None:
    """A - B over the seeds both arms have (zero_shot pairs with every seed), both metrics."""
    if b_name == "zero_shot" and b_cells:
        b_by = {s: b_cells[0] for s in (c["seed"] for c in a_cells)}
    else:
        b_by = {c["seed"]: c for c in b_cells}
    a_by = {c["seed"]: c for c in a_cells}
    seeds = sorted(set(a_by) & set(b_by))
    if not seeds:
        return None
    a, b = [a_by[s] for s in seeds], [b_by[s] for s in seeds]
    out: dict = {"n": len(seeds), "seeds": seeds}
    for metric in ("nll", "em"):
        if metric == "nll":
            args = ([c["nll_sum"] for c in a], [c["nll_sum"] for c in b])
            dens = ([c["nll_tokens"] for c in a], [c["nll_tokens"] for c in b])
        else:
            args, dens = ([c["per_item"] for c in a], [c["per_item"] for c in b]), (None, None)
        boot = paired_difference(args[0], args[1], dens[0], dens[1])
        anova = anova_interval(args[0], args[1], dens[0], dens[1])
        lower = metric == "nll"
        better, worse = LABEL.get(a_name, a_name), LABEL.get(b_name, b_name)
        if a_name.startswith("random") and b_name.startswith("random"):  # two Random arms: name each
            better, worse = a_name, b_name
        entry = {
            "mean": boot.mean,
            "ci95": [boot.low, boot.high],
            "anova_ci95": anova["ci95"],
            "anova_df": anova["df"],
            "outcome": outcome(boot.low, boot.high, SESOI[metric], better, worse, lower),
            "anova_outcome": outcome(*anova["ci95"], SESOI[metric], better, worse, lower),
            "within_sesoi": -SESOI[metric] < boot.low and boot.high < SESOI[metric],
        }
        if len(seeds) < 3:
            entry["note"] = (
                f"{len(seeds)} seeds: indicative only (a bootstrap over so few seeds understates their spread)"
            )
        out[metric] = entry
    return out


# ------------------------------------------------------------------------------------------- arms
def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def arm_summary(cells: list[dict], meta: dict) -> dict:
    """One arm of one pool: its per-seed scores, budgets, and what it kept (slips, families)."""
    cells = sorted(cells, key=lambda c: c["seed"])
    out: dict = {
        "n": len(cells),
        "seeds": [c["seed"] for c in cells],
        "per_seed": {"nll": [c["nll"] for c in cells], "em": [c["em"] for c in cells]},
        "train_s": [round(c["train_s"], 1) for c in cells],
    }
    if cells and "overrides" in cells[0]:
        out["overrides"] = cells[0]["overrides"]
    trained = [c for c in cells if "summary" in c]
    if trained:
        out["loss_tokens"] = _mean([c["summary"]["tokens_trained"] for c in trained])
        out["loss_tokens_per_seed"] = [c["summary"]["tokens_trained"] for c in trained]
        out["positions_with_grad"] = _mean([c["summary"]["positions_forwarded_with_grad"] for c in trained])
        out["positions_probed"] = _mean([c["summary"].get("positions_probed", 0.0) for c in trained])
        # the trainer's estimate: (probed positions + 3 x positions with grad) / (3 x every position)
        out["estimated_compute_vs_full_data"] = _mean(
            [
                c["summary"]["estimated_compute_vs_full_data"]
                for c in trained
                if "estimated_compute_vs_full_data" in c["summary"]
            ]
        )
    digests = [c["plans"] for c in cells if "plans" in c]
    if digests:
        out.update(kept_shares(digests, meta))
    fam = family_breakdown(cells, digests, meta)
    if fam:
        out["per_family"] = fam
    return out


def kept_shares(digests: list[dict], meta: dict) -> dict:
    """Token and row shares that carried a loss, from the plan-log digests of an arm's seeds."""
    slips = meta.get("slips", {})
    out: dict = {}
    out["distinct_rows_trained"] = [sum(1 for e in d["per_row"].values() if e[1] > 0) for d in digests]
    if not slips:
        return out
    per_seed = {"slip": [], "carried": [], "clean": [], "slipped_rows": [], "clean_rows": []}
    totals = dict.fromkeys(per_seed, (0.0, 0.0))

    def add(key: str, num: float, den: float) -> None:
        per_seed[key].append(num / den if den else None)
        totals[key] = (totals[key][0] + num, totals[key][1] + den)

    for d in digests:
        slip_seen = sum(v[0] for v in d["per_slip"].values())
        slip_trained = sum(v[1] for v in d["per_slip"].values())
        carried_seen = sum(v[2] for v in d["per_slip"].values())
        carried_trained = sum(v[3] for v in d["per_slip"].values())
        tokens_seen = sum(e[2] for e in d["per_row"].values())
        tokens_trained = sum(e[3] for e in d["per_row"].values())
        add("slip", slip_trained, slip_seen)
        add("carried", carried_trained, carried_seen)
        add("clean", tokens_trained - slip_trained - carried_trained, tokens_seen - slip_seen - carried_seen)
        slipped = [e for rid, e in d["per_row"].items() if rid in slips]
        clean = [e for rid, e in d["per_row"].items() if rid not in slips]
        add("slipped_rows", sum(e[1] for e in slipped), sum(e[0] for e in slipped))
        add("clean_rows", sum(e[1] for e in clean), sum(e[0] for e in clean))
    share = {k: (n / d if d else None) for k, (n, d) in totals.items()}
    out.update(
        slip_tokens_trained_share=share["slip"],
        carried_tokens_trained_share=share["carried"],
        clean_tokens_trained_share=share["clean"],
        slipped_rows_kept_share=share["slipped_rows"],
        clean_rows_kept_share=share["clean_rows"],
        shares_per_seed=per_seed,
        misaligned_token_logs=sum(d.get("misaligned", 0) for d in digests),
    )
    return out


def family_breakdown(cells: list[dict], digests: list[dict], meta: dict) -> dict:
    """Mixture pool: per family, the share of its rows' exposures kept, its loss tokens, its metric, its NLL."""
    family_of = meta.get("family_of", {})
    families = sorted(set(family_of.values()))
    if len(families) < 2:
        return {}
    out = {}
    for family in families:
        entry: dict = {}
        if digests:
            rows = [[e for rid, e in d["per_row"].items() if family_of.get(rid) == family] for d in digests]
            seen = sum(e[0] for r in rows for e in r)
            entry["rows_kept_share"] = sum(e[1] for r in rows for e in r) / seen if seen else None
            entry["loss_tokens"] = float(np.mean([sum(e[3] for e in r) for r in rows]))
        entry["metric"] = _mean([c["family_score"][family] for c in cells if family in c.get("family_score", {})])
        nll = []
        for c in map(lambda cell: restrict_to_family(cell, family), cells):
            tokens = sum(c["nll_tokens"])
            nll.append(sum(c["nll_sum"]) / tokens if tokens else float("nan"))
        entry["nll"] = _mean(nll)
        out[family] = entry
    return out


# ------------------------------------------------------------------------------------------- pools
def load_cells(folder: Path = CELLS) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def pool_meta(pool: str) -> dict:
    """The pool's meta (slips, families), rewritten deterministically if this checkout lacks it."""
    from suite_v2 import prepare_pool

    return prepare_pool(pool)


def pairing_check(cells: list[dict]) -> dict:
    """PLAN_v2.md, "Pairing": within a seed, every trained arm of a pool saw the same sample ids in
    the same steps (from the plan-log digests' per-step ids; no score is read)."""
    orders: dict[int, dict[str, list]] = {}
    for c in cells:
        if "plans" in c:
            orders.setdefault(c["seed"], {})[c["arm"]] = c["plans"]["order"]
    seeds = {}
    for seed in sorted(orders):
        arms = sorted(orders[seed])
        first = orders[seed][arms[0]]
        differ = [arm for arm in arms[1:] if orders[seed][arm] != first]
        seeds[str(seed)] = {"arms": arms, "same_steps": not differ, "differing_arms": differ}
    return {"seeds": seeds, "all_paired": all(v["same_steps"] for v in seeds.values())}


def restrict_to_family(cell: dict, family: str) -> dict:
    """A copy of a mixture cell holding only one family's NLL and metric items."""
    nll = [j for j, f in enumerate(cell["nll_family"]) if f == family]
    items = [j for j, f in enumerate(cell["item_family"]) if f == family]
    return {
        **cell,
        "nll_sum": [cell["nll_sum"][j] for j in nll],
        "nll_tokens": [cell["nll_tokens"][j] for j in nll],
        "per_item": [cell["per_item"][j] for j in items],
    }


def per_family_paired(by_arm: dict[str, list[dict]], meta: dict) -> dict:
    """Not in the plan (added after its primary comparison was read; exploratory, no verdict): the
    primary pair per mixture family, since the pooled NLL weighs families by their response tokens."""
    families = sorted(set(meta.get("family_of", {}).values()))
    if len(families) < 2 or not all(arm in by_arm for arm in PRIMARY):
        return {}
    out = {}
    for family in families:
        a = [restrict_to_family(c, family) for c in by_arm[PRIMARY[0]]]
        b = [restrict_to_family(c, family) for c in by_arm[PRIMARY[1]]]
        out[family] = compare(a, b, *PRIMARY)
    return out


def pool_report(pool: str, cells: list[dict], meta: dict, power: dict | None) -> dict:
    by_arm: dict[str, list[dict]] = {}
    for c in cells:
        if c["pool"] == pool:
            by_arm.setdefault(c["arm"], []).append(c)
    arms = {arm: arm_summary(by_arm[arm], meta) for arm in ARM_ORDER if arm in by_arm}
    paired = {}
    for a, b in COMPARISONS:
        if a in by_arm and b in by_arm:
            result = compare(by_arm[a], by_arm[b], a, b)
            if result:
                paired[f"{a}-{b}"] = result
    out = {"sesoi": SESOI, "arms": arms, "paired": paired}
    exploratory = per_family_paired(by_arm, meta)
    if exploratory:
        out["per_family_paired_exploratory"] = exploratory
    out["pairing"] = pairing_check([c for c in cells if c["pool"] == pool])
    if power is not None:
        out["power"] = power
    # every trained arm's loss tokens against Q-Tuning's (PLAN_v2.md change log, 2026-12-07: the
    # mixture's random_25x50 is the token-matched check when random_25xR misses the 5%)
    qt = arms.get(PRIMARY[0], {}).get("loss_tokens")
    if qt:
        ratios = {arm: a["loss_tokens"] / qt for arm, a in arms.items() if a.get("loss_tokens") and arm != PRIMARY[0]}
        out["loss_tokens_over_qtuning"] = ratios
        if PRIMARY[1] in ratios:
            out["token_match"] = {
                "random_over_qtuning_loss_tokens": ratios[PRIMARY[1]],
                "within_5_percent": abs(ratios[PRIMARY[1]] - 1) <= 0.05,
            }
    return out


def overall_verdict(pools: dict) -> str:
    """PLAN_v2.md's verdict, from the primary comparison's NLL outcome on the two primary pools."""
    name = "-".join(PRIMARY)
    outcomes = {p: pools[p]["paired"].get(name, {}).get("nll", {}).get("outcome") for p in ("slips", "mixture")}
    if any(o is None for o in outcomes.values()):
        done = {p: pools[p]["paired"].get(name, {}).get("n", 0) for p in outcomes}
        return f"not yet decided: the primary comparison has {done} paired seeds of {8} planned per pool"
    values = set(outcomes.values())
    if values == {"Q-Tuning better"}:
        return "Q-Tuning beats token-matched Random on both primary pools (held-out NLL)"
    if values == {"Random better"}:
        return "token-matched Random beats Q-Tuning on both primary pools (held-out NLL)"
    if values == {"equivalent"}:
        return "equivalent: on both primary pools the held-out NLL difference lies within +-0.01 nats/token"
    return "per pool: " + "; ".join(f"{p}: {o}" for p, o in outcomes.items())


# ------------------------------------------------------------------------------------------- power
def _components(d: np.ndarray) -> tuple[float, float, float]:
    """Variance components (seed, item, error) of a (S, I) grid of paired differences (ANOVA)."""
    s, i = d.shape
    grand = d.mean()
    seed_means, item_means = d.mean(axis=1), d.mean(axis=0)
    ms_seed = i * ((seed_means - grand) ** 2).sum() / (s - 1)
    ms_item = s * ((item_means - grand) ** 2).sum() / (i - 1)
    resid = d - seed_means[:, None] - item_means[None, :] + grand
    ms_err = (resid**2).sum() / ((s - 1) * (i - 1))
    return max((ms_seed - ms_err) / i, 0.0), max((ms_item - ms_err) / s, 0.0), ms_err


def power_table(seeds: int = 8, items: dict | None = None) -> dict:
    """Minimum detectable effects (80% power, two-sided 5%) of qtuning - random at `seeds` paired
    seeds, from the variance components of the first design's three-epoch arms (5 seeds each):
    MDE = (t_.975 + t_.80) x sqrt(var_seed / S + var_item / I + var_err / (S I)), t with S - 1 df."""
    from scipy import stats

    items = items or {"nll": 500, "em": 250}
    cells = [json.loads(p.read_text()) for p in sorted(V1_CELLS.glob("*_25x50_3ep__s*.json"))]
    out: dict = {"seeds": seeds, "items": items, "source": "first design, qtuning_25x50_3ep - random_25x50_3ep"}
    factor = float(stats.t.ppf(0.975, seeds - 1) + stats.t.ppf(0.80, seeds - 1))
    for task in ("arith", "letters", "arc"):
        a = {c["seed"]: c for c in cells if c["task"] == task and c["arm"] == "qtuning_25x50_3ep"}
        b = {c["seed"]: c for c in cells if c["task"] == task and c["arm"] == "random_25x50_3ep"}
        common = sorted(set(a) & set(b))
        if len(common) < 2:
            continue
        row = {}
        for metric in ("nll", "em"):
            if metric == "nll":
                den = np.mean([a[s]["nll_tokens"] for s in common])
                d = np.array([np.subtract(a[s]["nll_sum"], b[s]["nll_sum"]) / den for s in common])
            else:
                d = np.array([np.subtract(a[s]["per_item"], b[s]["per_item"]) for s in common])
            vs, vi, ve = _components(d)
            se = np.sqrt(vs / seeds + vi / items[metric] + ve / (seeds * items[metric]))
            row[metric] = {
                "mde80": float(factor * se),
                "var_seed": float(vs),
                "var_item": float(vi),
                "var_error": float(ve),
                "first_design_seeds": len(common),
            }
        out[task] = row
    return out


# ------------------------------------------------------------------------------------------- machine time
def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp()


def machine_time(cells: list[dict], pauses_path: Path = PAUSES) -> dict:
    """The cap's tally (PLAN_v2.md change log, 2026-12-06): each finished cell's recorded wall-clock
    (training + evaluation + NLL) less the logged stops that fell inside its run. Stops of a cell that
    was killed and rerun lie outside the finished run and are not subtracted."""
    stops: dict[str, list[tuple[float, float]]] = {}
    if pauses_path.exists():
        paused: dict[str, float] = {}
        for line in pauses_path.read_text().splitlines():
            if not line.strip():
                continue
            event = json.loads(line)
            if event["action"] == "pause":
                paused[event["cell"]] = _seconds(event["time"])
            elif event["cell"] in paused:
                stops.setdefault(event["cell"], []).append((paused.pop(event["cell"]), _seconds(event["time"])))
    recorded = stopped = 0.0
    for c in cells:
        total = c.get("train_s", 0.0) + c.get("eval_s", 0.0) + c.get("nll_s", 0.0)
        recorded += total
        start = _seconds(c["started"]) if "started" in c else None
        for a, b in stops.get(f"{c['pool']}:{c['arm']}:{c['seed']}", []):
            # + 60 s: `started` is stamped before the trainer and model are built, which the spans leave out
            if start is not None and start <= a and b <= start + total + 60:
                stopped += b - a
    from suite_v2 import planned_cells

    done = {(c["pool"], c["arm"], c["seed"]) for c in cells}
    return {
        "cells": len(cells),
        "recorded_h": recorded / 3600,
        "logged_stops_h": stopped / 3600,
        "net_h": (recorded - stopped) / 3600,
        "cap_h": CAP_H,
        "missing_cells": [f"{p}:{a}:{s}" for p, a, s in planned_cells() if (p, a, s) not in done],
    }


# ------------------------------------------------------------------------------------------- write
def write_report() -> dict:
    cells = load_cells()
    pools = {}
    for pool, items in (("slips", {"nll": 500, "em": 250}), ("mixture", {"nll": 500, "em": 400})):
        power = power_table(8, items)
        pools[pool] = pool_report(pool, cells, pool_meta(pool), power)
    context = pool_report("clean", cells, pool_meta("clean"), None)
    result = {
        "plan": PLAN,
        "cells": len(cells),
        "pools": pools,
        "context_clean": context,
        "verdict": overall_verdict(pools),
        "machine_time": machine_time(cells),
    }
    RESULTS_JSON.write_text(json.dumps(result, indent=1) + "\n")
    return result


# ------------------------------------------------------------------------------------------- markdown
def _fmt(value, digits: int = 4, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _interval(mean: float, ci: list[float], digits: int, scale: float) -> str:
    """'+0.0199 [+0.0163, +0.0237]' on the given scale."""
    return f"{mean * scale:+.{digits}f} [{ci[0] * scale:+.{digits}f}, {ci[1] * scale:+.{digits}f}]"


def markdown(result: dict) -> str:
    """The tables of RESULTS.md's section for this design, printed from evidence_v2.json alone, so
    that the text quotes only what the json holds (NLL in nats/token, EM in points)."""
    lines = [f"Verdict (PLAN_v2.md's rule): {result['verdict']}", ""]
    for pool, report in [*result["pools"].items(), ("clean (context)", result.get("context_clean", {}))]:
        if not report.get("arms"):
            continue
        lines += [f"**{pool}**", "", "| arm | seeds | NLL | EM | loss tokens | positions with grad |"]
        lines += ["|---|---:|---:|---:|---:|---:|"]
        for arm, a in report["arms"].items():
            nll, em = a["per_seed"]["nll"], a["per_seed"]["em"]
            lines.append(
                f"| `{arm}` | {a['n']} | {_fmt(_mean(nll))} | {_fmt(_mean(em), 1, 100)} | "
                f"{_fmt(a.get('loss_tokens'), 0)} | {_fmt(a.get('positions_with_grad'), 0)} |"
            )
        lines += ["", "| A - B | seeds | NLL [95% CI] (ANOVA) | outcome | EM points [95% CI] (ANOVA) | outcome |"]
        lines += ["|---|---:|---|---|---|---|"]
        for name, c in report["paired"].items():
            cols = []
            for metric, digits, scale in (("nll", 4, 1.0), ("em", 1, 100.0)):
                e = c[metric]
                alo, ahi = e["anova_ci95"]
                note = " (indicative only)" if "note" in e else ""
                if e.get("within_sesoi") and e["outcome"].endswith("better"):
                    note += " (within SESOI)"  # PLAN_v2.md, "Statistics": resolved but smaller than the SESOI
                cols.append(
                    _interval(e["mean"], e["ci95"], digits, scale)
                    + f" ([{alo * scale:+.{digits}f}, {ahi * scale:+.{digits}f}])"
                )
                cols.append(e["outcome"] + note)
            lines.append(f"| {name} | {c['n']} | " + " | ".join(cols) + " |")
        shares = [(arm, a) for arm, a in report["arms"].items() if a.get("slip_tokens_trained_share") is not None]
        if shares:
            lines += [
                "",
                "| arm | slip tokens trained | carried tokens trained | other tokens trained |"
                " slipped rows kept | clean rows kept |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for arm, a in shares:
                keys = (
                    "slip_tokens_trained_share",
                    "carried_tokens_trained_share",
                    "clean_tokens_trained_share",
                    "slipped_rows_kept_share",
                    "clean_rows_kept_share",
                )
                lines.append(f"| `{arm}` | " + " | ".join(_fmt(a.get(k), 3) for k in keys) + " |")
        families = [(arm, a["per_family"]) for arm, a in report["arms"].items() if a.get("per_family")]
        if families:
            lines += ["", "| arm | family | rows kept | loss tokens | metric | NLL |", "|---|---|---:|---:|---:|---:|"]
            for arm, fam in families:
                for family, f in fam.items():
                    lines.append(
                        f"| `{arm}` | {family} | {_fmt(f.get('rows_kept_share'), 3)} | "
                        f"{_fmt(f.get('loss_tokens'), 0)} | {_fmt(f.get('metric'), 1, 100)} | {_fmt(f.get('nll'))} |"
                    )
        per_family = report.get("per_family_paired_exploratory")
        if per_family:
            lines += [
                "",
                "Exploratory, not in the plan (no verdict): Q-Tuning - Random per family.",
                "",
                "| family | seeds | NLL [95% CI] | EM points [95% CI] |",
                "|---|---:|---|---|",
            ]
            for family, c in per_family.items():
                cols = [_interval(c[m]["mean"], c[m]["ci95"], d, k) for m, d, k in (("nll", 4, 1.0), ("em", 1, 100.0))]
                lines.append(f"| {family} | {c['n']} | " + " | ".join(cols) + " |")
        match = report.get("token_match")
        if match:
            lines += [
                "",
                f"Token match: Random / Q-Tuning loss tokens {match['random_over_qtuning_loss_tokens']:.3f}"
                f" (within 5%: {match['within_5_percent']}).",
            ]
        ratios = {a: r for a, r in report.get("loss_tokens_over_qtuning", {}).items() if a != PRIMARY[1]}
        if ratios:
            lines.append(
                "Loss tokens / Q-Tuning's: " + ", ".join(f"`{arm}` {r:.3f}" for arm, r in ratios.items()) + "."
            )
        pairing = report.get("pairing")
        if pairing:
            lines += [
                f"Pairing: same sample ids in the same steps for every arm of each seed: {pairing['all_paired']}."
            ]
        lines.append("")
    t = result.get("machine_time")
    if t:
        lines.append(
            f"Machine time: {t['cells']} cells, {t['recorded_h']:.2f} h recorded, {t['logged_stops_h']:.2f} h of it"
            f" logged stops, {t['net_h']:.2f} h against the {t['cap_h']:.0f} h cap; cells not run:"
            f" {len(t['missing_cells'])}" + (f" ({', '.join(t['missing_cells'])})." if t["missing_cells"] else ".")
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if "--markdown" in sys.argv:
        print(markdown(json.loads(RESULTS_JSON.read_text())))
    elif "--power" in sys.argv:
        for items in ({"nll": 500, "em": 250}, {"nll": 500, "em": 400}):
            print(json.dumps(power_table(8, items), indent=1))
    else:
        print(write_report()["verdict"])
