"""The evidence suite's second design (benchmarks/evidence/PLAN_v2.md): out of the data-starved regime.

    python benchmarks/evidence/suite_v2.py                 # run every missing cell in the plan's order, then report
    python benchmarks/evidence/suite_v2.py --limit-s 3600  # start no new cell after an hour
    python benchmarks/evidence/suite_v2.py --only slips:qtuning_25x50:0
    python benchmarks/evidence/suite_v2.py --report        # rewrite evidence_v2.json from the finished cells
    python benchmarks/evidence/suite_v2.py --prepare       # write the pools and print their sizes (no training)

Like the first design (suite.py), every cell (pool, arm, seed) trains in its own process from the
plan's pinned commit (`bash benchmarks/evidence/background_v2.sh` makes the worktree and copies the
finished cells back), evaluates, and is written atomically to
benchmarks/results/evidence_v2_cells/<pool>__<arm>__s<seed>.json; a killed cell reruns from its start.

Pools (512 training rows each, 3 epochs, batch 16 = 96 optimizer steps):
- slips:   arith-steps in which 20% of the rows carry one wrong intermediate result, carried on to
           the final answer; the wrong numbers' token positions are known (meta.json);
- mixture: 128 rows each of four families: arith-steps, letter-count-steps, ARC-Easy, TriviaQA;
- clean:   the slips pool's rows without the slips (the context arm).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".evidence_v2"  # git-ignored: data files and training runs
CELLS = ROOT / "benchmarks" / "results" / "evidence_v2_cells"
# QTUNING_V2_SMOKE=1: the machinery only (2 steps, 4 items a family, cells under .evidence_v2/smoke_cells)
SMOKE = os.environ.get("QTUNING_V2_SMOKE") == "1"
if SMOKE:
    CELLS = WORK / "smoke_cells"
PLAN = "benchmarks/evidence/PLAN_v2.md"

SPLIT_SEED = 1234
SLIP_SEED = 1236
SLIP_FRACTION = 0.2
SLIP_OFFSETS = (-10, -2, -1, 1, 2, 10)
POOL_ROWS = 512
FAMILY_ROWS = 128  # mixture: 4 x 128
EVAL_BATCH = 64
SAMPLE_RATIO = 0.25  # the design's sample budget

# The first design's recipe (benchmarks/recipe_base.yaml), unchanged but for 3 epochs, the token log and
# the fp32 probe on every machine (PLAN_v2.md; recorded in every cell).
BASE = {
    **yaml.safe_load((ROOT / "benchmarks" / "recipe_base.yaml").read_text()),
    "num_train_epochs": 3,
    "plan_log_tokens": True,
    "probe_precision": "same",
}

POOLS = ("slips", "mixture", "clean")
# family -> (built-in set, evaluation task, metric, response length)
FAMILIES = {
    "arith": ("arith-steps", "arith", "exact_match"),
    "letters": ("letter-count-steps", "letters", "exact_match"),
    "arc": ("arc-easy", "arc_easy", "acc"),
    "trivia": ("triviaqa", "triviaqa", "exact_match"),
}
METRIC_ITEMS = {"slips": 250, "clean": 250, "mixture": 100}  # per family in the mixture
NLL_ITEMS = {"slips": 500, "clean": 500, "mixture": 125}  # per family in the mixture

RANDOM = dict(sample_pruner="random", token_pruner="random")
# arm -> config overrides; None = zero-shot; "R" and "S" are fixed by the rules below from seed 0's cell
ARMS: dict[str, dict | None] = {
    "zero_shot": None,
    "full": dict(pruning_method="none"),
    "qtuning_25x50": dict(sample_ratio=SAMPLE_RATIO, token_ratio=0.5),
    "random_25xR": dict(**RANDOM, sample_ratio=SAMPLE_RATIO, token_ratio="R"),
    "random_25x50": dict(**RANDOM, sample_ratio=SAMPLE_RATIO, token_ratio=0.5),
    "qtuning_Sx100": dict(sample_ratio="S", token_ratio=1.0),
}
PRIMARY_SEEDS = 8
NOMINAL_SEEDS = 4
VARIANT_SEEDS = 5
CONTEXT_SEEDS = 3
# PLAN_v2.md change log, 2026-12-07 (session 18): the mixture's random_25xR trains 11% fewer loss tokens
# than Q-Tuning, so its random_25x50 arm (which expects Q-Tuning's tokens there) runs 8 seeds, not 4
MIXTURE_TOKEN_CHECK_SEEDS = range(NOMINAL_SEEDS, PRIMARY_SEEDS)


def planned_cells() -> list[tuple[str, str, int]]:
    """Every cell of PLAN_v2.md, in its order: the primary comparison first, seed by seed."""
    order: list[tuple[str, str, int]] = []
    for s in range(PRIMARY_SEEDS):
        for pool in ("slips", "mixture"):
            order += [(pool, "qtuning_25x50", s), (pool, "random_25xR", s)]
    order += [(p, "random_25x50", s) for s in range(NOMINAL_SEEDS) for p in ("slips", "mixture")]
    order += [("mixture", "random_25x50", s) for s in MIXTURE_TOKEN_CHECK_SEEDS]
    order += [(p, "qtuning_Sx100", s) for s in range(VARIANT_SEEDS) for p in ("slips", "mixture")]
    order += [("clean", a, s) for s in range(CONTEXT_SEEDS) for a in ("qtuning_25x50", "random_25xR")]
    order += [(p, "zero_shot", 0) for p in POOLS]
    order += [(p, "full", 0) for p in ("slips", "mixture")]
    return order


# ------------------------------------------------------------------------------------------- data
def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


_STEP = re.compile(r"^Step (\d+): (-?\d+) ([+-]) (\d+) = (-?\d+)$")


def slip_response(response: str, rng: random.Random) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """An arith-steps worked solution with one wrong intermediate result, carried to the end.

    One step k among the first n-1 (never the last: the slip is carried) gets its result off by an
    offset from SLIP_OFFSETS; every later line starts from the wrong running total, computes
    correctly from it, and the answer is the carried wrong total. Returns the new response, the
    character spans of the slip itself (the wrong result of step k) and of the carried numbers (every
    later number that differs from the clean solution)."""
    lines = response.split("\n")
    steps = [_STEP.match(line) for line in lines[:-1]]
    if not steps or any(m is None for m in steps) or not lines[-1].startswith("Answer: "):
        raise ValueError(f"not an arith-steps response: {response!r}")
    n = len(steps)
    if n < 2:
        raise ValueError("a slip needs at least two steps (one intermediate result)")
    k = rng.randrange(n - 1)  # 0-based index of the slipped step
    offset = rng.choice(SLIP_OFFSETS)
    out_lines: list[str] = []
    slip: list[tuple[int, int]] = []
    carried: list[tuple[int, int]] = []
    position = 0  # character offset of the current line in the new response
    total = int(steps[0].group(2))
    for i, m in enumerate(steps):
        op, value = m.group(3), int(m.group(4))
        left = total
        result = left + value if op == "+" else left - value
        if i == k:
            result += offset
        head = f"Step {i + 1}: "
        line = f"{head}{left} {op} {value} = {result}"
        if i > k:  # the left operand is the carried wrong total
            carried.append((position + len(head), position + len(head) + len(str(left))))
        start = position + len(line) - len(str(result))
        (slip if i == k else carried if i > k else []).append((start, start + len(str(result))))
        out_lines.append(line)
        position += len(line) + 1
        total = result
    answer = f"Answer: {total}"
    carried.append((position + len("Answer: "), position + len(answer)))
    out_lines.append(answer)
    return "\n".join(out_lines), slip, carried


def _token_indices(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """Indices of the tokens whose character span overlaps any of `spans`."""
    return [t for t, (a, b) in enumerate(offsets) if b > a and any(a < hi and b > lo for lo, hi in spans)]


def _unique_rows(rows: list[dict], held_out: set[str], count: int) -> list[dict]:
    """The first `count` rows whose prompt is unique and not an evaluation prompt."""
    out, seen = [], set()
    for r in rows:
        key = _norm(r["prompt"])
        if key in held_out or key in seen:
            continue
        seen.add(key)
        out.append(r)
        if len(out) == count:
            break
    if len(out) < count:
        raise ValueError(f"only {len(out)} usable rows, {count} needed")
    return out


def _family_split(family: str, train_count: int, eval_count: int) -> tuple[list[dict], list[dict]]:
    """(training rows, evaluation records) of one family, disjoint by prompt."""
    from qtuning.data.builtin import load_builtin_records

    builtin = FAMILIES[family][0]
    records = load_builtin_records(builtin)
    if family in ("arith", "letters"):  # procedural: records 4000+ are held out, as in the first design
        eval_rows, pool = records[4000 : 4000 + eval_count], records[:4000]
    elif family == "arc":  # train on ARC-Easy test (shuffled), evaluate on its validation set
        eval_rows = load_builtin_records("arc-easy-val")[:eval_count]
        pool = records[:]
        random.Random(SPLIT_SEED).shuffle(pool)
    else:  # one set: a seeded shuffle, evaluation first
        pool = records[:]
        random.Random(SPLIT_SEED).shuffle(pool)
        eval_rows, pool = pool[:eval_count], pool[eval_count:]
    train = _unique_rows(pool, {_norm(r["prompt"]) for r in eval_rows}, train_count)
    if family == "arc":  # the question alone -> the correct choice's text (the first design's arc rows)
        from qtuning.evaluation import arc_question

        train = [dict(r, prompt=arc_question(r), response=r["choices"][r["gold"]]) for r in train]
    return train, eval_rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as handle:
        for r in rows:
            handle.write(json.dumps({"id": r["id"], "prompt": r["prompt"], "completion": r["response"]}) + "\n")


def prepare_pool(pool: str) -> dict:
    """Write a pool's training rows and evaluation records once, deterministically; return its meta."""
    folder = WORK / pool
    meta_path = folder / "meta.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    meta: dict = {"pool": pool, "split_seed": SPLIT_SEED}
    if pool in ("slips", "clean"):
        n_eval = max(METRIC_ITEMS[pool], NLL_ITEMS[pool])
        train, eval_rows = _family_split("arith", POOL_ROWS, n_eval)
        evals = {"arith": eval_rows}
        meta["family_of"] = {r["id"]: "arith" for r in train}
        if pool == "slips":
            from qtuning.data.models import load_tokenizer

            tokenizer = load_tokenizer(BASE["model"])
            rng = random.Random(SLIP_SEED)
            slipped = sorted(rng.sample(range(len(train)), round(SLIP_FRACTION * len(train))))
            meta["slip_seed"] = SLIP_SEED
            meta["slips"] = {}
            train = [dict(r) for r in train]
            for i in slipped:
                text, slip, carried = slip_response(train[i]["response"], rng)
                encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
                offsets = [tuple(o) for o in encoded["offset_mapping"]]
                meta["slips"][train[i]["id"]] = {
                    "token_ids": encoded["input_ids"],
                    "slip_tokens": _token_indices(offsets, slip),
                    "carried_tokens": _token_indices(offsets, carried),
                    "clean_response": train[i]["response"],
                }
                train[i]["response"] = text
    else:
        train, evals = [], {}
        n_eval = max(METRIC_ITEMS[pool], NLL_ITEMS[pool])
        meta["family_of"] = {}
        for family in FAMILIES:
            rows, eval_rows = _family_split(family, FAMILY_ROWS, n_eval)
            rows = [dict(r, id=f"{family}:{r['id']}") for r in rows]  # ids unique across families
            train += rows
            evals[family] = eval_rows
            meta["family_of"].update({r["id"]: family for r in rows})
        random.Random(SPLIT_SEED).shuffle(train)  # the trainer shuffles again by seed; this only mixes the file
    _write_rows(folder / "train.jsonl", train)
    (folder / "eval_records.json").write_text(json.dumps(evals))
    meta.update(train=len(train), eval={f: len(v) for f, v in evals.items()}, train_ids=[r["id"] for r in train])
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


# ------------------------------------------------------------------------------------------- the two rules
def cell_path(pool: str, arm: str, seed: int) -> Path:
    return CELLS / f"{pool}__{arm}__s{seed}.json"


def token_ratio_rule(qtuning_seed0: dict) -> float:
    """PLAN_v2.md, rule R: Random's token ratio that trains as many loss tokens as Q-Tuning's seed 0.

    Random keeps SAMPLE_RATIO of every pool's rows at random, so it expects SAMPLE_RATIO x the
    trainable tokens scored; R = Q-Tuning's trained tokens / that, rounded to 3 decimals."""
    summary = qtuning_seed0["summary"]
    return round(summary["tokens_trained"] / (SAMPLE_RATIO * summary["trainable_tokens_scored"]), 3)


def sample_ratio_rule(qtuning_seed0: dict) -> float:
    """PLAN_v2.md, rule S: the variant's sample ratio (no token pruning) that trains as many loss
    tokens as Q-Tuning's seed 0: SAMPLE_RATIO x Q-Tuning's trained tokens / the trainable tokens of
    the rows it kept (what those rows would have trained without token pruning), 4 decimals."""
    return round(
        SAMPLE_RATIO * qtuning_seed0["summary"]["tokens_trained"] / qtuning_seed0["plans"]["kept_trainable_tokens"], 4
    )


def resolved_overrides(pool: str, arm: str) -> dict:
    """The arm's config overrides with R and S filled in from the pool's qtuning_25x50 seed-0 cell."""
    overrides = dict(ARMS[arm])
    if "R" in overrides.values() or "S" in overrides.values():
        path = cell_path(pool, "qtuning_25x50", 0)
        if not path.exists():
            raise RuntimeError(f"{pool}/{arm} needs {path.name} first (rules R and S)")
        seed0 = json.loads(path.read_text())
        if overrides.get("token_ratio") == "R":
            overrides["token_ratio"] = token_ratio_rule(seed0)
        if overrides.get("sample_ratio") == "S":
            overrides["sample_ratio"] = sample_ratio_rule(seed0)
    return overrides


# ------------------------------------------------------------------------------------------- one cell
def plan_digest(plan_log: Path, rows: list[dict], meta: dict) -> dict:
    """What the report needs from a plan log: each step's sample ids (the pairing check); per row
    [seen, kept, tokens seen, tokens trained]; the kept rows' trainable tokens; and, for slipped
    rows, [slip tokens seen, slip tokens trained, carried seen, carried trained]."""
    slips = meta.get("slips", {})
    order, per_row, per_slip = [], {}, {}
    kept_trainable = 0
    misaligned = 0
    for line in open(plan_log):
        plan = json.loads(line)
        samples = plan["samples"]
        order.append(samples["id"])
        logged = {t["id"]: t for t in plan.get("tokens", [])}
        for sid, role, trainable, kept in zip(
            samples["id"], samples["role"], samples["trainable_tokens"], samples["kept_tokens"]
        ):
            row_id = rows[sid]["id"]
            entry = per_row.setdefault(row_id, [0, 0, 0, 0])
            entry[0] += 1
            entry[1] += int(role != 0)
            entry[2] += trainable
            entry[3] += kept if role != 0 else 0
            kept_trainable += trainable if role != 0 else 0
            if row_id not in slips:
                continue
            info = slips[row_id]
            tally = per_slip.setdefault(row_id, [0, 0, 0, 0])
            tally[0] += len(info["slip_tokens"])
            tally[2] += len(info["carried_tokens"])
            if role == 0:
                continue
            if sid not in logged:  # kept whole (Q4): every trainable token carried a loss
                tally[1] += len(info["slip_tokens"])
                tally[3] += len(info["carried_tokens"])
                continue
            flags = _align(logged[sid]["token_ids"], logged[sid]["kept"], info["token_ids"])
            if flags is None:
                misaligned += 1
                continue
            tally[1] += sum(flags[t] for t in info["slip_tokens"])
            tally[3] += sum(flags[t] for t in info["carried_tokens"])
    return {
        "order": order,
        "per_row": per_row,
        "per_slip": per_slip,
        "kept_trainable_tokens": kept_trainable,
        "misaligned": misaligned,
    }


def _align(logged_ids: list[int], kept: list, response_ids: list[int]) -> list[int] | None:
    """The kept flags of the response's own tokens: where its token ids start among the logged ones."""
    n = len(response_ids)
    for start in range(len(logged_ids) - n + 1):
        if logged_ids[start : start + n] == response_ids:
            return [int(bool(k)) for k in kept[start : start + n]]
    return None


def _eval_records(pool: str) -> tuple[dict, list[dict]]:
    """(metric records per family, NLL records with their family) of a pool."""
    evals = json.loads((WORK / pool / "eval_records.json").read_text())
    metric, nll = {}, []
    for family, records in evals.items():
        metric[family] = records[: 4 if SMOKE else METRIC_ITEMS[pool]]
        for r in records[: 4 if SMOKE else NLL_ITEMS[pool]]:
            if family == "arc":  # the correct answer's text after the question, as the arc rows are trained
                from qtuning.evaluation import arc_question

                r = {"prompt": arc_question(r), "response": r["choices"][r["gold"]]}
            nll.append({"family": family, "prompt": r["prompt"], "response": r["response"]})
    return metric, nll


def run_cell(pool: str, arm: str, seed: int) -> dict:
    import torch

    from qtuning.data.models import load_model_and_tokenizer
    from qtuning.evaluation import evaluate, response_nll

    torch.set_num_threads(int(os.environ.get("QTUNING_THREADS", "2")))
    meta = prepare_pool(pool)
    folder = WORK / pool
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "")
    record: dict = {
        "pool": pool,
        "arm": arm,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "code_commit": commit,
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "host": os.uname().nodename},
    }
    if ARMS[arm] is None:
        model, tokenizer = load_model_and_tokenizer(BASE["model"])
        record["train_s"] = 0.0
    else:
        from qtuning.data import load_records, split_records
        from qtuning.training.run import build_trainer
        from qtuning.training.sft_config import train_configs

        overrides = resolved_overrides(pool, arm)
        record["overrides"] = overrides
        out = WORK / ("smoke_runs" if SMOKE else "runs") / f"{pool}__{arm}__s{seed}"
        data = folder / "train.jsonl"
        settings = {**BASE, **overrides, **(dict(max_steps=2) if SMOKE else {})}
        run, cfg = train_configs(dict(output_dir=str(out), data=str(data), seed=seed, **settings))
        record["probe_precision"] = cfg.resolved_probe_precision()
        trainer, _ = build_trainer(run, cfg)
        started = time.perf_counter()
        trainer.train()
        record["train_s"] = time.perf_counter() - started
        record["summary"] = {k: v for k, v in trainer.qtuning_summary.items() if isinstance(v, (int, float))}
        record["log_history"] = [h for h in trainer.state.log_history if "loss" in h]
        plan_log = out / "qtuning_plans.jsonl"
        if plan_log.exists():
            rows, _ = split_records(load_records(str(data))[0], 0.0, seed)  # the trainer's row order
            record["plans"] = plan_digest(plan_log, rows, meta)
        model, tokenizer = trainer.model, trainer.processing_class
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
    model.eval()
    metric_records, nll_records = _eval_records(pool)
    started = time.perf_counter()
    tasks = {FAMILIES[f][1]: recs for f, recs in metric_records.items()}
    result = evaluate(
        model,
        tokenizer,
        list(tasks),
        records=tasks,
        engine="native",
        progress=False,
        batch_size=EVAL_BATCH,
        samples=True,
    )
    record["per_item"], record["item_ids"], record["item_family"] = [], [], []
    record["family_score"] = {}
    for family in metric_records:
        task, metric = FAMILIES[family][1], FAMILIES[family][2]
        items = result["samples"][task]
        record["per_item"] += [float(s[metric]) for s in items]
        record["item_ids"] += [s["id"] for s in items]
        record["item_family"] += [family] * len(items)
        record["family_score"][family] = result["tasks"][task][metric]
        if family in ("arith", "letters"):
            record.setdefault("outputs_head", {})[family] = [s["output"] for s in items[:3]]
    record["em"] = sum(record["per_item"]) / len(record["per_item"])
    record["eval_s"] = time.perf_counter() - started
    started = time.perf_counter()
    pairs = response_nll(model, tokenizer, nll_records, batch_size=16)
    record["nll_sum"] = [p[0] for p in pairs]
    record["nll_tokens"] = [p[1] for p in pairs]
    record["nll_family"] = [r["family"] for r in nll_records]
    record["nll"] = sum(record["nll_sum"]) / max(1, sum(record["nll_tokens"]))
    record["nll_s"] = time.perf_counter() - started
    return record


# ------------------------------------------------------------------------------------------- driver
def runnable(pool: str, arm: str) -> bool:
    """Cells with rule R or S wait for their pool's Q-Tuning seed-0 cell."""
    needs_seed0 = ARMS[arm] is not None and ("R" in ARMS[arm].values() or "S" in ARMS[arm].values())
    return not needs_seed0 or cell_path(pool, "qtuning_25x50", 0).exists()


def run_grid(cells: list[tuple[str, str, int]], limit_s: float | None) -> None:
    env = dict(
        os.environ,
        QTUNING_THREADS="2",
        OMP_NUM_THREADS="2",
        MKL_NUM_THREADS="2",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    began = time.perf_counter()
    for pool, arm, seed in cells:
        if cell_path(pool, arm, seed).exists():
            continue
        if not runnable(pool, arm):
            print(f"[evidence-v2] {pool} {arm} seed {seed}: waits for {pool}/qtuning_25x50/seed 0", flush=True)
            continue
        if limit_s is not None and time.perf_counter() - began > limit_s:
            print(f"[evidence-v2] time limit reached; {pool}/{arm}/s{seed} and later cells not started", flush=True)
            break
        print(f"[evidence-v2] {time.strftime('%H:%M:%S')} {pool} {arm} seed {seed} ...", flush=True)
        started = time.perf_counter()
        (WORK / "logs").mkdir(parents=True, exist_ok=True)
        with open(WORK / "logs" / f"{pool}__{arm}__s{seed}.txt", "w") as log:
            code = subprocess.run(
                [sys.executable, __file__, "--cell", f"{pool}:{arm}:{seed}"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            ).returncode
        if code != 0:
            print(f"[evidence-v2] {pool} {arm} seed {seed} FAILED (exit {code}): {WORK}/logs/", flush=True)
            continue
        cell = json.loads(cell_path(pool, arm, seed).read_text())
        print(
            f"[evidence-v2] {pool} {arm} seed {seed}: em {cell['em']:.4f} nll {cell['nll']:.4f} "
            f"(train {cell['train_s']:.0f} s, eval {cell['eval_s'] + cell['nll_s']:.0f} s, "
            f"{time.perf_counter() - started:.0f} s)",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="POOL:ARM:SEED,... (default: the whole plan)")
    parser.add_argument("--limit-s", type=float, default=None, help="start no new cell after this many seconds")
    parser.add_argument("--report", action="store_true", help="only rewrite the results from the finished cells")
    parser.add_argument("--prepare", action="store_true", help="only write the pools and print their sizes")
    parser.add_argument("--print-order", action="store_true", help="only print the planned cells as --only takes them")
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)  # POOL:ARM:SEED, run in this process
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(Path(__file__).parent))
    if args.cell:
        pool, arm, seed = args.cell.split(":")
        record = run_cell(pool, arm, int(seed))
        CELLS.mkdir(parents=True, exist_ok=True)
        tmp = cell_path(pool, arm, int(seed)).with_suffix(".tmp")
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(cell_path(pool, arm, int(seed)))  # atomic: a killed cell leaves no half record
        return 0
    if args.print_order:
        print(",".join(f"{pool}:{arm}:{seed}" for pool, arm, seed in planned_cells()))
        return 0
    if args.prepare:
        for pool in POOLS:
            meta = prepare_pool(pool)
            print(pool, meta["train"], "rows;", "eval", meta["eval"], "; slipped", len(meta.get("slips", {})))
        return 0
    if not args.report:
        if args.only:
            cells = [(c.split(":")[0], c.split(":")[1], int(c.split(":")[2])) for c in args.only.split(",")]
        else:
            cells = planned_cells()
        for pool in dict.fromkeys(c[0] for c in cells):
            prepare_pool(pool)
        # two passes: a cell that waited for its pool's seed-0 cell runs in the second
        run_grid(cells, args.limit_s)
        run_grid(cells, args.limit_s)
    from report_v2 import write_report

    write_report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
