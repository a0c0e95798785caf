"""The second evidence design's parts (benchmarks/evidence/PLAN_v2.md): the slips and their token
spans, the pools (disjoint, deterministic), rules R and S, the plan-log digest, the four outcomes
and the ANOVA interval against hand-worked values."""

import json
import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from qtuning.data.procedural import arith_record

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks" / "evidence"))

_LINE = re.compile(r"Step \d+: (-?\d+) ([+-]) (\d+) = (-?\d+)")


# ------------------------------------------------------------------------------ the slips
@pytest.mark.parametrize("index", range(60))
def test_a_slip_is_one_wrong_result_carried_consistently_to_the_answer(index):
    from suite_v2 import SLIP_OFFSETS, slip_response

    clean = arith_record(index)["response"]
    slipped, slip, carried = slip_response(clean, random.Random(index))
    clean_lines, lines = clean.split("\n"), slipped.split("\n")
    assert len(lines) == len(clean_lines)
    wrong_steps = []
    for i, line in enumerate(lines[:-1]):
        left, op, value, result = _LINE.fullmatch(line).groups()
        expected = int(left) + int(value) if op == "+" else int(left) - int(value)
        if int(result) != expected:
            wrong_steps.append((i, int(result) - expected))
        if i > 0:  # every line starts from the previous line's (possibly wrong) result
            assert int(left) == int(_LINE.fullmatch(lines[i - 1]).group(4))
    assert len(wrong_steps) == 1  # exactly one arithmetic error
    k, offset = wrong_steps[0]
    assert k < len(lines) - 2 and offset in SLIP_OFFSETS  # never the last step: the error is carried
    final = int(lines[-1].removeprefix("Answer: "))
    assert final - int(clean_lines[-1].removeprefix("Answer: ")) == offset
    # the slip span is the wrong result; carried spans are exactly the later numbers that changed
    assert len(slip) == 1 and slipped[slip[0][0] : slip[0][1]] == _LINE.fullmatch(lines[k]).group(4)
    differing = []
    for i in range(k + 1, len(lines) - 1):
        new, old = _LINE.fullmatch(lines[i]).groups(), _LINE.fullmatch(clean_lines[i]).groups()
        differing += [new[0], new[3]] if new[0] != old[0] else []
    differing.append(str(final))
    assert [slipped[a:b] for a, b in carried] == differing


def test_slip_response_refuses_what_is_not_a_worked_solution():
    from suite_v2 import slip_response

    with pytest.raises(ValueError, match="not an arith-steps response"):
        slip_response("Paris", random.Random(0))
    with pytest.raises(ValueError, match="at least two steps"):
        slip_response("Step 1: 2 + 3 = 5\nAnswer: 5", random.Random(0))


def test_token_indices_pick_the_tokens_that_overlap_a_span():
    from suite_v2 import _token_indices

    offsets = [(0, 4), (4, 5), (5, 8), (8, 8), (8, 10)]  # (8, 8): an empty special token
    assert _token_indices(offsets, [(4, 6)]) == [1, 2]
    assert _token_indices(offsets, [(0, 1), (9, 10)]) == [0, 4]
    assert _token_indices(offsets, [(8, 8)]) == []


# ------------------------------------------------------------------------------ the pools
@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    import suite_v2

    work = tmp_path_factory.mktemp("v2")
    old = suite_v2.WORK
    suite_v2.WORK = work
    try:
        yield {pool: suite_v2.prepare_pool(pool) for pool in ("slips", "mixture", "clean")}, work
    finally:
        suite_v2.WORK = old


def _rows(path):
    return [json.loads(line) for line in open(path)]


@pytest.mark.real_model  # the slips' token spans need the real tokenizer
def test_pools_are_disjoint_from_evaluation_and_sized_as_planned(pools):
    import suite_v2

    from qtuning.data.models import load_tokenizer

    metas, work = pools
    norm = suite_v2._norm
    for pool, meta in metas.items():
        train = _rows(work / pool / "train.jsonl")
        evals = json.loads((work / pool / "eval_records.json").read_text())
        assert len(train) == 512 == meta["train"] and len({r["id"] for r in train}) == 512
        eval_prompts = {norm(r["prompt"]) for records in evals.values() for r in records}
        for family, records in evals.items():
            if family == "arc":  # trained as the question alone: compare the questions too
                from qtuning.evaluation import arc_question

                eval_prompts |= {norm(arc_question(r)) for r in records}
        assert not {norm(r["prompt"]) for r in train} & eval_prompts
        assert all(len(v) >= 500 / len(evals) for v in evals.values())
    families = metas["mixture"]["family_of"]
    assert sorted(families.values()).count("trivia") == 128 and len(set(families.values())) == 4
    # slips: 20% of the rows, the clean pool is the same rows without them
    slips, clean = _rows(work / "slips" / "train.jsonl"), _rows(work / "clean" / "train.jsonl")
    assert [r["id"] for r in slips] == [r["id"] for r in clean]
    changed = {a["id"] for a, b in zip(slips, clean) if a["completion"] != b["completion"]}
    assert changed == set(metas["slips"]["slips"]) and len(changed) == round(0.2 * 512)
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    by_id = {r["id"]: r for r in slips}
    for row_id, info in list(metas["slips"]["slips"].items())[:20]:
        assert tokenizer.decode(info["token_ids"]) == by_id[row_id]["completion"]
        wrong = "".join(tokenizer.decode([info["token_ids"][t]]) for t in info["slip_tokens"]).strip()
        assert re.fullmatch(r"-?\d+", wrong)
        slipped_lines, clean_lines = by_id[row_id]["completion"].split("\n"), info["clean_response"].split("\n")
        wrong_lines = [j for j, line in enumerate(slipped_lines) if line != clean_lines[j]]
        assert slipped_lines[wrong_lines[0]].endswith(f"= {wrong}")  # the first changed line ends in the slip
    assert suite_v2.prepare_pool("slips") == metas["slips"]  # cached and deterministic


# ------------------------------------------------------------------------------ rules R and S
def test_rule_r_matches_randoms_expected_loss_tokens_to_qtunings():
    from suite_v2 import token_ratio_rule

    seed0 = {"summary": {"tokens_trained": 9000.0, "trainable_tokens_scored": 120000.0}}
    assert token_ratio_rule(seed0) == 0.3  # 9000 / (0.25 x 120000)
    seed0["summary"]["tokens_trained"] = 11111.0
    assert token_ratio_rule(seed0) == round(11111 / 30000, 3) == 0.37


def test_rule_s_is_the_sample_ratio_whose_whole_rows_train_as_many_tokens():
    from suite_v2 import sample_ratio_rule

    seed0 = {"summary": {"tokens_trained": 7500.0}, "plans": {"kept_trainable_tokens": 10000}}
    assert sample_ratio_rule(seed0) == 0.1875  # 0.25 x 7500 / 10000: 3 rows of every 16


def test_rules_wait_for_the_seed0_cell(tmp_path, monkeypatch):
    import suite_v2

    monkeypatch.setattr(suite_v2, "CELLS", tmp_path)
    assert not suite_v2.runnable("slips", "random_25xR") and suite_v2.runnable("slips", "random_25x50")
    with pytest.raises(RuntimeError, match="needs slips__qtuning_25x50__s0.json first"):
        suite_v2.resolved_overrides("slips", "qtuning_Sx100")
    cell = {"summary": {"tokens_trained": 6000.0, "trainable_tokens_scored": 48000.0}}
    cell["plans"] = {"kept_trainable_tokens": 8000}
    (tmp_path / "slips__qtuning_25x50__s0.json").write_text(json.dumps(cell))
    assert suite_v2.resolved_overrides("slips", "random_25xR")["token_ratio"] == 0.5
    assert suite_v2.resolved_overrides("slips", "qtuning_Sx100")["sample_ratio"] == 0.1875
    assert suite_v2.resolved_overrides("slips", "random_25xR")["sample_pruner"] == "random"


def test_the_plan_runs_the_primary_comparison_first_and_has_the_seeds_the_issue_asks_for():
    from suite_v2 import planned_cells

    cells = planned_cells()
    assert cells[:4] == [
        ("slips", "qtuning_25x50", 0),
        ("slips", "random_25xR", 0),
        ("mixture", "qtuning_25x50", 0),
        ("mixture", "random_25xR", 0),
    ]
    assert len(cells) == len(set(cells))
    for pool, nominal in (("slips", 4), ("mixture", 8)):  # the mixture's 8: change log, 2026-12-07
        for arm, seeds in (("qtuning_25x50", 8), ("random_25xR", 8), ("random_25x50", nominal), ("qtuning_Sx100", 5)):
            assert sum(1 for c in cells if c[:2] == (pool, arm)) == seeds
    primary = [i for i, c in enumerate(cells) if c[1] in ("qtuning_25x50", "random_25xR") and c[0] != "clean"]
    assert max(primary) < min(i for i, c in enumerate(cells) if c[1] not in ("qtuning_25x50", "random_25xR"))
    nominal = [i for i, c in enumerate(cells) if c[1] == "random_25x50"]
    assert max(nominal) < min(i for i, c in enumerate(cells) if c[1] == "qtuning_Sx100")


# ------------------------------------------------------------------------------ the plan-log digest
def test_digest_counts_slip_tokens_by_role(tmp_path):
    from suite_v2 import plan_digest

    rows = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    meta = {"slips": {"a": {"token_ids": [5, 6, 7], "slip_tokens": [1], "carried_tokens": [2]}}}
    plans = [  # step 1: a kept as Q2 with token 6 pruned; step 2: a kept whole (Q4); step 3: a dropped
        {
            "samples": {"id": [0, 1], "role": [2, 4], "trainable_tokens": [4, 3], "kept_tokens": [3, 3]},
            "tokens": [{"id": 0, "token_ids": [5, 6, 7, 2], "kept": [True, False, True, True]}],
        },
        {"samples": {"id": [0, 2], "role": [4, 0], "trainable_tokens": [4, 2], "kept_tokens": [4, 2]}},
        {"samples": {"id": [0], "role": [0], "trainable_tokens": [4], "kept_tokens": [4]}},
    ]
    log = tmp_path / "plans.jsonl"
    log.write_text("".join(json.dumps(p) + "\n" for p in plans))
    digest = plan_digest(log, rows, meta)
    assert digest["per_row"] == {"a": [3, 2, 12, 7], "b": [1, 1, 3, 3], "c": [1, 0, 2, 0]}
    assert digest["per_slip"] == {"a": [3, 1, 3, 2]}  # slip token pruned once, kept once (Q4), dropped once
    assert digest["kept_trainable_tokens"] == 4 + 3 + 4
    assert digest["order"] == [[0, 1], [0, 2], [0]] and digest["misaligned"] == 0


# ------------------------------------------------------------------------------ statistics
@pytest.mark.parametrize(
    "low, high, lower_is_better, expected",
    [
        (0.001, 0.004, False, "A better"),
        (-0.03, -0.02, False, "B better"),
        (-0.005, 0.008, False, "equivalent"),
        (-0.005, 0.02, False, "undecided"),
        (-0.02, -0.011, True, "A better"),  # NLL: lower is better
        (0.003, 0.02, True, "B better"),
        (-0.0099, 0.0099, True, "equivalent"),
        (-0.01, 0.005, True, "undecided"),  # touching the bound is not inside it
    ],
)
def test_four_outcomes(low, high, lower_is_better, expected):
    from report_v2 import outcome

    assert outcome(low, high, 0.01, "A", "B", lower_is_better) == expected


def test_anova_interval_against_hand_worked_values():
    from report_v2 import anova_interval
    from scipy import stats

    # d = a - b on 2 seeds x 3 items: [[1, 2, 3], [3, 4, 8]]; grand 3.5; seed means 2, 5; item means 2, 3, 5.5
    a = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 8.0]])
    b = np.zeros_like(a)
    # MS_seed = 3 x (1.5^2 + 1.5^2) / 1 = 13.5; MS_item = 2 x (1.5^2 + 0.5^2 + 2^2) / 2 = 6.5
    # residuals: d - seed - item + grand = [[0.5, 0.5, -1], [-0.5, -0.5, 1]]: MS_err = 3 / 2 = 1.5
    # Var(mean) = (13.5 + 6.5 - 1.5) / 6; df = 18.5^2 / (13.5^2 / 1 + 6.5^2 / 2 + 1.5^2 / 2)
    var, df = 18.5 / 6, 18.5**2 / (13.5**2 + 6.5**2 / 2 + 1.5**2 / 2)
    result = anova_interval(a, b)
    half = stats.t.ppf(0.975, df) * np.sqrt(var)
    assert result["mean"] == pytest.approx(3.5)
    assert result["df"] == pytest.approx(df)
    assert result["ci95"] == pytest.approx([3.5 - half, 3.5 + half])


def test_anova_interval_puts_ratio_metrics_on_the_ratio_scale():
    from report_v2 import anova_interval

    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 50, size=(4, 30)).astype(float)
    a, b = rng.random((4, 30)) * tokens, rng.random((4, 30)) * tokens
    result = anova_interval(a, b, tokens, tokens)
    assert result["mean"] == pytest.approx(a.sum() / tokens.sum() - b.sum() / tokens.sum())
    assert result["ci95"][0] < result["mean"] < result["ci95"][1]


def test_compare_gives_both_intervals_and_flags_few_seeds():
    from report_v2 import compare

    rng = np.random.default_rng(1)

    def cell(seed, shift):
        tokens = [10.0] * 50
        return {
            "seed": seed,
            "nll_sum": list(rng.random(50) * 10 + shift),
            "nll_tokens": tokens,
            "per_item": list((rng.random(50) < 0.5).astype(float)),
        }

    a = [cell(s, 0.0) for s in range(2)]
    b = [cell(s, 5.0) for s in range(2)]  # B's NLL is 0.5 nats/token higher: A is better
    result = compare(a, b, "qtuning_25x50", "random_25xR")
    assert result["n"] == 2 and result["nll"]["outcome"] == "Q-Tuning better"
    assert result["nll"]["mean"] == pytest.approx(-0.5, abs=0.1)
    assert "indicative only" in result["nll"]["note"]
    assert set(result["em"]) >= {"mean", "ci95", "anova_ci95", "outcome", "anova_outcome"}
    # two Random arms: the outcome names the arm, not "Random"
    assert compare(a, b, "random_25xR", "random_25x50")["nll"]["outcome"] == "random_25xR better"
    assert compare(b, a, "random_25xR", "random_25x50")["nll"]["outcome"] == "random_25x50 better"


def test_power_table_is_computed_from_the_first_designs_cells():
    from report_v2 import power_table

    table = power_table(8, {"nll": 500, "em": 250})
    for task in ("arith", "letters", "arc"):
        assert table[task]["nll"]["mde80"] > 0 and table[task]["em"]["mde80"] > 0
        assert table[task]["nll"]["first_design_seeds"] == 5
    more_seeds = power_table(16, {"nll": 500, "em": 250})
    assert more_seeds["letters"]["em"]["mde80"] < table["letters"]["em"]["mde80"]  # more seeds, smaller MDE


def test_plan_log_lists_the_tokens_of_every_token_prunable_kept_sample():
    """The slip shares need the kept flags of Random's kept rows too (role KEPT), not only Q2's."""
    import torch

    from qtuning import QTuningConfig, plan_batch
    from qtuning.data.plan_log import plan_records
    from qtuning.engine.selection import Role

    g = torch.Generator().manual_seed(0)
    nll, entropy = torch.rand(8, 12, generator=g) * 3, torch.rand(8, 12, generator=g)
    mask = torch.zeros(8, 12, dtype=torch.bool)
    mask[:, 4:] = True
    input_ids = torch.randint(0, 50, (8, 12), generator=g)
    for pruner in ("random", "qtuning"):
        cfg = QTuningConfig(sample_pruner=pruner, token_pruner=pruner, sample_ratio=0.5, token_ratio=0.5)
        plan = plan_batch(nll, entropy, mask, cfg)
        record = plan_records(plan, step=1, micro_batch=0, input_ids=input_ids)
        prunable = [b for b, r in enumerate(plan.kept_role.tolist()) if r in (Role.Q2, Role.KEPT)]
        assert [t["id"] for t in record["tokens"]] == prunable and prunable
        for t in record["tokens"]:
            assert len(t["kept"]) == 8 and sum(t["kept"]) == int(plan.token_keep[t["id"]].sum())


def _synthetic_cell(arm, seed, shift, order, rng):
    tokens = [10.0] * 40
    nll_sum = list(rng.random(40) * 10 + shift)
    per_item = list((rng.random(40) < 0.5).astype(float))
    return {
        "pool": "slips",
        "arm": arm,
        "seed": seed,
        "train_s": 1.0,
        "nll_sum": nll_sum,
        "nll_tokens": tokens,
        "nll": sum(nll_sum) / sum(tokens),
        "per_item": per_item,
        "em": float(np.mean(per_item)),
        "summary": {"tokens_trained": 1000.0 + seed, "positions_forwarded_with_grad": 2000.0},
        "plans": {"order": order, "per_row": {"r0": [2, 1, 30, 15]}, "per_slip": {}, "misaligned": 0},
    }


def test_pairing_check_finds_an_arm_that_saw_other_rows():
    from report_v2 import pairing_check

    rng = np.random.default_rng(2)
    same = [[0, 1], [2, 3]]
    cells = [_synthetic_cell(arm, 0, 0.0, same, rng) for arm in ("qtuning_25x50", "random_25xR")]
    assert pairing_check(cells)["all_paired"]
    cells.append(_synthetic_cell("random_25x50", 0, 0.0, [[0, 1], [3, 2]], rng))
    check = pairing_check(cells)
    assert not check["all_paired"] and check["seeds"]["0"]["differing_arms"] == ["random_25x50"]


def test_markdown_prints_the_jsons_figures_and_outcomes():
    from report_v2 import markdown, overall_verdict, pool_report

    rng = np.random.default_rng(3)
    order = [[0, 1]]
    cells = [_synthetic_cell("qtuning_25x50", s, 0.0, order, rng) for s in range(3)]
    cells += [_synthetic_cell("random_25xR", s, 5.0, order, rng) for s in range(3)]
    report = pool_report("slips", cells, {}, None)
    entry = report["paired"]["qtuning_25x50-random_25xR"]
    assert entry["nll"]["outcome"] == "Q-Tuning better" and report["pairing"]["all_paired"]
    result = {"pools": {"slips": report, "mixture": {"arms": {}, "paired": {}}}}
    result["verdict"] = overall_verdict(result["pools"])
    text = markdown(result)
    assert "not yet decided" in text
    assert f"{entry['nll']['mean']:+.4f} [{entry['nll']['ci95'][0]:+.4f}, {entry['nll']['ci95'][1]:+.4f}]" in text
    assert "| qtuning_25x50-random_25xR | 3 |" in text and "Q-Tuning better" in text
    assert "within 5%: True" in text and "Pairing: same sample ids" in text
    # a resolved difference inside +-SESOI is printed with its flag (PLAN_v2.md, "Statistics")
    flagged = any(entry[m]["within_sesoi"] and entry[m]["outcome"].endswith("better") for m in ("nll", "em"))
    assert ("(within SESOI)" in text) == flagged
    entry["nll"].update(within_sesoi=True)
    assert "Q-Tuning better (within SESOI)" in markdown(result)


def test_machine_time_subtracts_only_the_stops_inside_a_finished_run(tmp_path):
    from report_v2 import machine_time

    cell = {"pool": "slips", "arm": "qtuning_25x50", "seed": 7, "started": "2026-12-07 05:00:00"}
    cell.update(train_s=1800.0, eval_s=500.0, nll_s=100.0)  # 40 minutes recorded
    pauses = tmp_path / "pauses.jsonl"
    events = [
        ("pause", "2026-12-07 04:30:00"),  # a stop of an earlier, killed run of the same cell
        ("resume", "2026-12-07 04:40:00"),
        ("pause", "2026-12-07 05:10:00"),  # 15 minutes inside the finished run
        ("resume", "2026-12-07 05:25:00"),
    ]
    pauses.write_text(
        "".join(json.dumps({"action": a, "cell": "slips:qtuning_25x50:7", "time": t}) + "\n" for a, t in events)
    )
    tally = machine_time([cell], pauses)
    assert tally["recorded_h"] == pytest.approx(2400 / 3600)
    assert tally["logged_stops_h"] == pytest.approx(0.25)
    assert tally["net_h"] == pytest.approx(2400 / 3600 - 0.25)
    assert "slips:qtuning_25x50:7" not in tally["missing_cells"] and "slips:qtuning_25x50:0" in tally["missing_cells"]


def test_per_family_comparison_reads_only_that_familys_items():
    from report_v2 import per_family_paired

    def cell(arm: str, seed: int, arith_nll: float) -> dict:
        # two families, two NLL items and two metric items each
        return {
            "arm": arm,
            "seed": seed,
            "nll_family": ["arith", "arith", "trivia", "trivia"],
            "nll_sum": [arith_nll, arith_nll, 5.0, 5.0],
            "nll_tokens": [10, 10, 10, 10],
            "item_family": ["arith", "trivia", "arith", "trivia"],
            "per_item": [1.0, 0.0, 1.0, 0.0] if arm == "qtuning_25x50" else [0.0, 0.0, 0.0, 0.0],
        }

    by_arm = {
        "qtuning_25x50": [cell("qtuning_25x50", s, 3.0) for s in range(3)],
        "random_25xR": [cell("random_25xR", s, 1.0) for s in range(3)],
    }
    meta = {"family_of": {"a1": "arith", "t1": "trivia"}}
    out = per_family_paired(by_arm, meta)
    assert out["arith"]["nll"]["mean"] == pytest.approx(0.2)  # (3 - 1) / 10 per token, every seed and item
    assert out["trivia"]["nll"]["mean"] == pytest.approx(0.0)
    assert out["arith"]["em"]["mean"] == pytest.approx(1.0) and out["trivia"]["em"]["mean"] == pytest.approx(0.0)
    assert per_family_paired(by_arm, {"family_of": {"a1": "arith"}}) == {}  # one family: nothing to split
