"""Selection quality of the threshold variants: stability across pool sizes, and where label noise lands.

    .venv/bin/python benchmarks/selection_quality.py [--rows 512] [--shuffles 5] [--window 512]

Static measurements from one scoring pass of SmolLM2-135M-Instruct (the model before training; a
training run rescores with its current weights every step, so these are the first step's view):

1. Stability. 512 real Alpaca rows are scored once. The reference is the paper's selection over
   the whole data set as one pool. For pools of 8 and 16 (5 shuffles each), every variant selects
   pool after pool in order, and the union of the kept sets is compared with the reference
   (Jaccard). Variants: `paper` (lines from each pool) and `history` (lines from the last W scored
   samples, qtuning.engine.history), plus the noise-aware options below. Beside them: the ceiling that any
   selection keeping exactly round(r_s N) rows per pool can reach, and history thresholds with the
   window already full from an earlier pass (a later epoch, if the scores had not moved).
2. Noise. The evidence suite's noisy arith rows (20% of the responses swapped with another row's,
   benchmarks/evidence/PLAN.md) are scored once; in pools of 16 (5 shuffles), per variant: the
   share of corrupted rows among the kept rows, and the share of the corrupted rows' response
   tokens that carry a loss against the clean rows' share; Random x Random at the same budget.

Writes benchmarks/results/selection_quality.json (the downstream part comes from the evidence
suite: benchmarks/evidence/report.py adds it when its cells exist) and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / ".bench-cache"

VARIANTS = {  # name -> QTuningConfig overrides (sample_ratio 0.25, token_ratio 0.5 for all)
    "paper": {},
    "history": {"thresholds": "history"},
    "history_supplement_low_ppl": {"thresholds": "history", "supplement_toward": "low_ppl"},
    "history_q2_cap_0.5": {"thresholds": "history", "max_q2_share": 0.5},
    "paper_supplement_low_ppl": {"supplement_toward": "low_ppl"},
    "paper_q2_cap_0.5": {"max_q2_share": 0.5},
}


def score_records(records: list[dict], max_length: int, cache_name: str) -> list:
    """Per-row ScoredBatch parts (one row each, so pools can be cut in any order), cached on disk."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"{cache_name}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    from tqdm import tqdm

    from qtuning import QTuningConfig
    from qtuning.data import collate, tokenize_record
    from qtuning.data.models import load_model_and_tokenizer
    from qtuning.engine.selection import prepare_scores
    from qtuning.modeling.probe import score_batch

    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")
    features = [tokenize_record(tokenizer, r, max_length) for r in records]
    rows = []
    for start in tqdm(range(0, len(features), 16), desc=f"scoring {cache_name}", unit="batch"):
        b = collate(features[start : start + 16], tokenizer.pad_token_id)
        scores, loss_mask, attention = score_batch(
            model, b["input_ids"], b["attention_mask"], b["labels"], sub_batch_size=4
        )
        for i in range(b["input_ids"].shape[0]):
            width = int(attention[i].sum())
            rows.append(
                prepare_scores(
                    scores.nll[i : i + 1, :width],
                    scores.entropy[i : i + 1, :width],
                    loss_mask[i : i + 1, :width],
                    QTuningConfig(),
                    attention[i : i + 1, :width],
                )
            )
    torch.save(rows, path)
    return rows


def run_pools(rows: list, order: list[int], pool: int, cfg, seed: int, window=None) -> list:
    """Plan pool after pool (in `order`), each pool alone, with one score window carried across pools
    when cfg.thresholds == 'history' (a fresh one unless `window` is given, e.g. already filled by an
    earlier pass). Returns one SelectionPlan per row, in `order`."""
    from qtuning.engine.history import ScoreWindow
    from qtuning.engine.selection import plan_pool

    if window is None and cfg.thresholds == "history":
        window = ScoreWindow(cfg.history_window)
    plans = []
    for step, start in enumerate(range(0, len(order) - pool + 1, pool)):
        parts = [rows[i] for i in order[start : start + pool]]
        planned = plan_pool(parts, cfg, seed=seed * 100_003 + step, window=window)
        plans += [planned[i] for i in range(len(parts))]
    return plans


def shuffled_orders(n: int, shuffles: int) -> list[list[int]]:
    """Row orders 0..n-1, one per shuffle, each seeded by its index."""
    orders = []
    for shuffle in range(shuffles):
        order = list(range(n))
        random.Random(shuffle).shuffle(order)
        orders.append(order)
    return orders


def kept_rows(order: list[int], plans: list) -> set[int]:
    """The rows of `order` whose plan keeps them (plans as run_pools returns them)."""
    return {order[j] for j, p in enumerate(plans) if bool(p.sample_keep.any())}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def fixed_budget_ceiling(order: list[int], pool: int, keep_per_pool: int, reference: set) -> float:
    """The highest Jaccard with `reference` that ANY selection keeping exactly `keep_per_pool` rows of
    every pool (in `order`) can reach: each pool keeps as many reference rows as it may, min(k_p, K).
    With the kept total fixed, Jaccard = I / (kept + |reference| - I) rises with the overlap I."""
    overlap = kept = 0
    for start in range(0, len(order) - pool + 1, pool):
        in_reference = sum(i in reference for i in order[start : start + pool])
        overlap += min(in_reference, keep_per_pool)
        kept += keep_per_pool
    return overlap / (kept + len(reference) - overlap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--shuffles", type=int, default=5)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--pools", type=int, nargs="+", default=[8, 16])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "benchmarks" / "evidence"))
    from qtuning import QTuningConfig
    from qtuning.data import load_records, split_records
    from qtuning.engine.selection import plan_pool

    base = dict(sample_ratio=0.25, token_ratio=0.5, history_window=args.window)
    out: dict = {
        "benchmark": "selection_quality",
        "model": "smollm2-135m-instruct (before training)",
        "window": args.window,
        "shuffles": args.shuffles,
        "variants": VARIANTS,
    }

    # ---- 1. stability on Alpaca
    records, _ = load_records("alpaca-demo")
    records, _ = split_records(records, 0.0, seed=0, max_train=args.rows)
    rows = score_records(records, 256, f"alpaca-{args.rows}")
    whole = plan_pool(rows, QTuningConfig(**{k: v for k, v in base.items() if k != "history_window"}))
    reference = {i for i, p in whole.items() if bool(p.sample_keep.any())}
    out["whole_dataset_kept"] = len(reference)
    jac: dict = {}
    for name, overrides in VARIANTS.items():
        cfg = QTuningConfig(**base, **overrides)
        for pool in args.pools:
            values = []
            for shuffle, order in enumerate(shuffled_orders(len(rows), args.shuffles)):
                plans = run_pools(rows, order, pool, cfg, shuffle)
                values.append(jaccard(kept_rows(order, plans), reference))
            jac.setdefault(name, {})[str(pool)] = round(sum(values) / len(values), 4)
            print(f"stability  {name:28s} pool {pool:3d}: Jaccard vs whole {jac[name][str(pool)]:.3f}", flush=True)
    out["jaccard_vs_whole"] = jac
    # What the numbers above can be measured against: the ceiling of a selection held to round(r_s N)
    # rows per pool (every variant is), and history thresholds in a window already full from an
    # earlier pass over the same scores (a later epoch whose scores have not moved), rather than the
    # one-pass run above, whose first pools see a window of 16, 32, ... points.
    from qtuning.engine.history import ScoreWindow

    ceiling: dict = {}
    warm: dict = {}
    for pool in args.pools:
        keep = round(base["sample_ratio"] * pool)
        orders = shuffled_orders(len(rows), args.shuffles)
        ceiling[str(pool)] = round(sum(fixed_budget_ceiling(o, pool, keep, reference) for o in orders) / len(orders), 4)
        for name in ("history", "history_supplement_low_ppl"):
            cfg = QTuningConfig(**base, **VARIANTS[name])
            values = []
            for shuffle, order in enumerate(orders):
                window = ScoreWindow(cfg.history_window)
                earlier = list(reversed(order))  # the earlier pass: the same rows in another order
                run_pools(rows, earlier, pool, cfg, shuffle + 1000, window)
                plans = run_pools(rows, order, pool, cfg, shuffle, window)
                values.append(jaccard(kept_rows(order, plans), reference))
            warm.setdefault(name, {})[str(pool)] = round(sum(values) / len(values), 4)
        print(
            f"stability  pool {pool:3d}: fixed-budget ceiling {ceiling[str(pool)]:.3f}; warm window: "
            + ", ".join(f"{n} {warm[n][str(pool)]:.3f}" for n in warm),
            flush=True,
        )
    out["jaccard_ceiling_fixed_budget"] = ceiling
    out["jaccard_vs_whole_warm_window"] = warm

    # ---- 2. noise on the evidence suite's noisy arith rows
    import suite  # benchmarks/evidence/suite.py: the same rows and corrupted ids as the suite

    meta = suite.prepare_task("arith")
    noisy, _ = load_records(str(suite.task_dir("arith") / "train_noisy.jsonl"))
    corrupted = [r["id"] in set(meta["corrupted_ids"]) for r in noisy]
    noisy_rows = score_records(noisy, 320, "arith-noisy")
    noise: dict = {}
    for name, overrides in {**VARIANTS, "random": {"sample_pruner": "random", "token_pruner": "random"}}.items():
        cfg = QTuningConfig(**base, **overrides)
        kept_bad = kept_all = tok_bad = tok_bad_all = tok_clean = tok_clean_all = 0
        for shuffle, order in enumerate(shuffled_orders(len(noisy_rows), args.shuffles)):
            for j, plan in enumerate(run_pools(noisy_rows, order, 16, cfg, shuffle)):
                bad = corrupted[order[j]]
                kept = int(plan.sample_keep.sum())
                kept_bad += kept * bad
                kept_all += kept
                trained = int(plan.token_keep.sum())
                total = int(plan.num_trainable_tokens.sum())
                if bad:
                    tok_bad, tok_bad_all = tok_bad + trained, tok_bad_all + total
                else:
                    tok_clean, tok_clean_all = tok_clean + trained, tok_clean_all + total
        noise[name] = {
            "corrupted_rows_kept_share": round(kept_bad / max(1, kept_all), 4),
            "corrupted_tokens_trained_share": round(tok_bad / max(1, tok_bad_all), 4),
            "clean_tokens_trained_share": round(tok_clean / max(1, tok_clean_all), 4),
        }
        print(
            f"noise      {name:28s} corrupted share of kept {noise[name]['corrupted_rows_kept_share']:.3f} | "
            f"corrupted tokens trained {noise[name]['corrupted_tokens_trained_share']:.3f} vs clean "
            f"{noise[name]['clean_tokens_trained_share']:.3f}",
            flush=True,
        )
    out["noise"] = noise
    out["noise_data"] = {
        "rows": len(noisy),
        "corrupted_rows": sum(corrupted),
        "corrupted_share_of_data": round(sum(corrupted) / len(noisy), 4),
    }
    out["config_fields"] = {
        f.name: f.default
        for f in dataclasses.fields(QTuningConfig)
        if f.name in ("thresholds", "history_window", "supplement_toward", "max_q2_share")
    }
    path = RESULTS / "selection_quality.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    for key in ("downstream", "default", "default_reason", "adoption"):  # written by the evidence report, kept here
        if key in previous:
            out[key] = previous[key]
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
