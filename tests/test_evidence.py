"""The evidence suite's parts: per-item held-out NLL, the suite's data (disjoint splits, the noise
derangement), its plan's cells and its readings. Its procedural tasks and the bootstrap have their own
files (test_procedural_data.py, test_bootstrap.py)."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks" / "evidence"))


# ------------------------------------------------------------------------------ held-out NLL
def test_response_nll_matches_the_models_own_loss():
    from qtuning.data import tokenize_record
    from qtuning.evaluation import response_nll
    from tests.helpers import tiny_chat_llama, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_chat_llama(tokenizer)
    records = [
        {"prompt": "Calculate 1 + 2.", "response": "Step 1: 1 + 2 = 3\nAnswer: 3"},
        {"prompt": "Hi", "response": "Hello there, how can I help you today?"},
        {"prompt": "A much longer prompt than the others, with several words in it.", "response": "Yes."},
    ]
    pairs = response_nll(model, tokenizer, records, batch_size=2)  # mixed lengths: padding inside a batch
    for record, (nll_sum, count) in zip(records, pairs):
        encoded = tokenize_record(
            tokenizer,
            {
                "prompt": [{"role": "user", "content": record["prompt"]}],
                "completion": [{"role": "assistant", "content": record["response"]}],
            },
            None,
        )
        ids = torch.tensor([encoded["input_ids"]])
        labels = torch.tensor([encoded["labels"]])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss  # mean CE over the response tokens
        assert count == int((labels[0, 1:] != -100).sum())
        assert nll_sum / count == pytest.approx(float(loss), rel=1e-4)


# ------------------------------------------------------------------------------ the suite's data
def _rows(path):
    return [json.loads(line) for line in open(path)]


@pytest.mark.parametrize("task", ["arith", "letters", "arc"])
def test_suite_training_and_evaluation_items_are_disjoint(task, tmp_path, monkeypatch):
    import suite

    from qtuning.evaluation import arc_question

    monkeypatch.setattr(suite, "WORK", tmp_path)
    meta = suite.prepare_task(task)
    train = _rows(tmp_path / task / "train.jsonl")
    held_out = json.loads((tmp_path / task / "eval_records.json").read_text())
    assert len(train) == suite.TASKS[task]["train"] == meta["train"]
    norm = suite._norm
    eval_prompts = {norm(arc_question(r)) if task == "arc" else norm(r["prompt"]) for r in held_out}
    assert not {norm(r["prompt"]) for r in train} & eval_prompts
    assert not {r["id"] for r in train} & {r["id"] for r in held_out}
    assert len({norm(r["prompt"]) for r in train}) == len(train)
    if task == "arc":  # trained as it is scored: the question alone, the correct choice's text
        assert all("\nA. " not in r["prompt"] for r in train)
    assert suite.prepare_task(task) == meta  # cached and deterministic


def test_suite_noise_is_a_derangement_of_the_responses(tmp_path, monkeypatch):
    import suite

    monkeypatch.setattr(suite, "WORK", tmp_path)
    meta = suite.prepare_task("arith")
    train = _rows(tmp_path / "arith" / "train.jsonl")
    noisy = _rows(tmp_path / "arith" / "train_noisy.jsonl")
    assert [r["id"] for r in noisy] == [r["id"] for r in train]
    swapped = {a["id"] for a, b in zip(train, noisy) if a["completion"] != b["completion"]}
    assert swapped == set(meta["corrupted_ids"]) and len(swapped) == round(0.2 * len(train))
    responses = {r["completion"] for r in train}
    assert all(b["completion"] in responses for b in noisy)


def test_the_plan_has_every_required_cell():
    import suite

    cells = suite.planned_cells(suite.TASK_ORDER)
    assert len(cells) == len(set(cells))
    for task in suite.TASK_ORDER:
        for arm in ("full", "random_25x50", "qtuning_25x50"):
            assert {s for t, a, s in cells if (t, a) == (task, arm)} == set(range(5))
        assert (task, "zero_shot", 0) in cells
        for arm in ("random_25x50_3ep", "qtuning_25x50_3ep"):
            assert suite.ARMS[arm][1]["num_train_epochs"] == 3
            assert (task, arm, 0) in cells
    # the sensitivity stage comes first: every zero-shot and full cell before any pruned one
    first_pruned = next(i for i, c in enumerate(cells) if c[1] not in ("zero_shot", "full"))
    assert all(c[1] not in ("zero_shot", "full") for c in cells[first_pruned:])


def test_a_seed_gives_every_arm_the_same_data_order_and_lora_init(tmp_path):
    """The suite's pairing: full data, Random and Q-Tuning with one seed see the same rows in the same
    steps (over two epochs) and start from the same LoRA weights."""
    from transformers import set_seed

    from qtuning.training.sft_config import QTuningSFTConfig
    from qtuning.training.trainer import ID_KEY, QTuningSFTTrainer
    from tests.helpers import tiny_dataset, tiny_llama, tiny_tokenizer

    class Recording(QTuningSFTTrainer):
        def get_batch_samples(self, epoch_iterator, num_batches, device):
            batches, count = super().get_batch_samples(epoch_iterator, num_batches, device)
            self.seen.append([i for b in batches for i in b[ID_KEY].tolist()])
            return batches, count

    runs = {}
    for name, overrides in {
        "full": dict(pruning_method="none"),
        "random": dict(sample_pruner="random", token_pruner="random", sample_ratio=0.25),
        "qtuning": dict(sample_ratio=0.25),
    }.items():
        set_seed(3)  # what run.build_trainer does first
        cfg = QTuningSFTConfig(
            output_dir=str(tmp_path / name),
            per_device_train_batch_size=8,
            num_train_epochs=2,
            report_to=[],
            learning_rate=1e-2,
            save_strategy="no",
            seed=3,
            disable_tqdm=True,
            probe_precision="same",
            **overrides,
        )
        from peft import LoraConfig

        trainer = Recording(
            model=tiny_llama(),
            args=cfg,
            train_dataset=tiny_dataset(32),
            processing_class=tiny_tokenizer(),
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
        )
        trainer.seen = []
        init = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
        trainer.train()
        runs[name] = (trainer.seen, init)
    full_order, full_init = runs["full"]
    assert len(full_order) == 8 and sorted(sum(full_order[:4], [])) == list(range(32))  # 2 epochs x 4 steps
    assert full_order[:4] != full_order[4:]  # the second epoch is reshuffled...
    for name in ("random", "qtuning"):
        order, init = runs[name]
        assert order == full_order  # ...the same way for every arm
        assert init.keys() == full_init.keys() and all(torch.equal(init[k], full_init[k]) for k in init)


def test_the_addendum_has_its_cells_and_a_recheck_of_the_paper_arm():
    import suite

    cells = suite.addendum_cells(suite.TASK_ORDER)
    assert ("arith", "qtuning_25x50_recheck", 0) == cells[0]  # the cross-commit check comes first
    assert suite.ARMS["qtuning_25x50_recheck"] == suite.ARMS["qtuning_25x50"]
    for task in suite.TASK_ORDER:
        for arm in ("qtuning_hist_25x50", "qtuning_histnoise_25x50"):
            assert {s for t, a, s in cells if (t, a) == (task, arm)} == set(range(5))
    assert suite.ARMS["qtuning_hist_25x50"][1]["thresholds"] == "history"
    assert not set(cells) & set(suite.planned_cells(suite.TASK_ORDER))


def test_arm_summary_costs_are_paired_with_the_same_seeds_full_cell():
    from report import arm_summary

    def cell(seed, score, train_s, positions, tokens, kept):
        summary = dict(
            positions_forwarded_with_grad=positions, samples_trained=kept, samples_scored=16, tokens_trained=tokens
        )
        return dict(seed=seed, score=score, per_item=[score] * 4, nll=0.5, train_s=train_s, eval_s=1.0, summary=summary)

    full = {0: cell(0, 0.5, 100.0, 1000, 400, 16), 1: cell(1, 0.5, 50.0, 1000, 400, 16)}
    # seed 0: 30 s of 100, 250 of 1000 positions, 100 of 400 loss tokens; seed 1: 20 of 50, 250, 200 of 400
    arm = arm_summary([cell(0, 0.25, 30.0, 250, 100, 4), cell(1, 0.75, 20.0, 250, 200, 4)], full)
    assert arm["mean"] == 50.0 and arm["n"] == 2 and arm["per_seed"] == [25.0, 75.0]
    assert arm["train_s_ratio_to_full"] == 0.35  # (0.3 + 0.4) / 2
    assert arm["train_s_fastest_ratio_to_full"] == 0.4  # fastest cell 20 s over full's fastest 50 s
    assert arm["positions_with_grad_ratio_to_full"] == 0.25
    assert arm["tokens_trained_ratio_to_full"] == 0.375  # (0.25 + 0.5) / 2
    assert arm["samples_trained_fraction"] == 0.25


def test_the_follow_up_adds_three_epoch_seeds_3_and_4_and_nothing_else():
    import suite

    listed = (Path(suite.__file__).parent / "order_followup.txt").read_text().splitlines()
    cells = [(t, a, int(s)) for t, a, s in (line.split(":") for line in listed if not line.startswith("#"))]
    expected = {(t, a, s) for t in suite.TASK_ORDER for a in ("random_25x50_3ep", "qtuning_25x50_3ep") for s in (3, 4)}
    assert len(cells) == len(set(cells)) and set(cells) == expected
    assert not set(cells) & set(suite.planned_cells(suite.TASK_ORDER) + suite.addendum_cells(suite.TASK_ORDER))


def test_probe_machines_assigns_each_probing_cell_to_the_last_record_before_it():
    from report import probe_machines

    records = [
        {"from": "2026-12-04 09:00:00", "probe": "fp32"},
        {"from": "2026-12-03 17:54:00", "probe": "bf16"},  # out of order on purpose
    ]
    cells = [
        {"task": "arith", "arm": "qtuning_25x50", "seed": 0, "started": "2026-12-02 10:00:00"},  # before both
        {"task": "arith", "arm": "qtuning_25x50", "seed": 1, "started": "2026-12-03 18:00:00"},
        {"task": "arc", "arm": "qtuning_25x50", "seed": 1, "started": "2026-12-04 09:30:00"},
        {"task": "arith", "arm": "infobatch_25x50", "seed": 0, "started": "2026-12-03 17:54:00"},  # at the start
        {"task": "arith", "arm": "random_25x50", "seed": 0, "started": "2026-12-03 18:00:00"},  # probes nothing
        {"task": "arith", "arm": "full", "seed": 0, "started": "2026-12-03 18:00:00"},
    ]
    assert probe_machines(cells, records) == {
        "infobatch_25x50": {"bf16": 1},
        "qtuning_25x50": {"not recorded": 1, "bf16": 1, "fp32": 1},
    }
    assert probe_machines(cells, []) == {"infobatch_25x50": {"not recorded": 1}, "qtuning_25x50": {"not recorded": 3}}


def test_three_epoch_reading_waits_for_five_seeds_then_applies_its_rule():
    from report import THREE_EPOCH, three_epoch_reading

    def tasks(*pairs):  # one (low, high, seeds) per task
        return {
            t: {"paired": {THREE_EPOCH: {"mean": (lo + hi) / 2, "ci95": [lo, hi], "n": n}}}
            for t, (lo, hi, n) in zip(("arith", "letters", "arc"), pairs)
        }

    assert three_epoch_reading(tasks((1, 3, 5), (1, 3, 5), (1, 3, 3))).startswith("PENDING")  # arc: 3 seeds
    assert three_epoch_reading(tasks((1, 3, 5), (1, 3, 5))).startswith("PENDING")  # a task missing
    assert three_epoch_reading({"arith": {"paired": {}}}).startswith("PENDING")
    assert three_epoch_reading(tasks((1, 3, 5), (0.5, 3, 5), (-1, 3, 5))).startswith("Q-Tuning better")
    assert three_epoch_reading(tasks((1, 3, 5), (-1, 3, 5), (-1, 3, 5))).startswith("not resolved")  # 1 above
    assert three_epoch_reading(tasks((1, 3, 5), (1, 3, 5), (-3, -1, 5))).startswith("not resolved")  # a loss
    assert three_epoch_reading(tasks((-3, -1, 5), (-3, -0.5, 5), (-1, 1, 5))).startswith("Random better")
    reading = three_epoch_reading(tasks((1, 3, 5), (1, 3, 5), (1, 3, 5)))
    assert "CI above 0 on 3, below 0 on 0, of 3 tasks" in reading and "arith +2.00 [+1.00, +3.00] (5 seeds)" in reading


def test_frontier_keeps_the_arms_no_cheaper_arm_beats():
    from report import cost_points, frontier

    points = {
        "zero_shot": (0.0, 2.0),
        "random_12.5x50": (0.12, 1.5),  # cheaper than random_25x50 but worse than zero-shot: off
        "random_25x50": (0.25, 4.0),
        "qtuning_25x50": (0.45, 4.0),  # no better than a cheaper arm: off
        "qtuning_50x50": (0.45, 6.0),
        "full": (1.0, 5.0),  # dearer and worse than qtuning_50x50: off
    }
    assert frontier(points) == ["zero_shot", "random_25x50", "qtuning_50x50"]
    arms = {
        "zero_shot": {"mean": 2.0, "positions_with_grad_ratio_to_full": 0.0},
        "full": {"mean": 5.0, "positions_with_grad_ratio_to_full": 1.0},
        "random_25x50": {"mean": 4.0, "positions_with_grad_ratio_to_full": 0.25},
        "noisy_full": {"mean": 9.0, "positions_with_grad_ratio_to_full": 1.0},  # the noise study: left out
        "qtuning_25x50": {"mean": 3.0},  # no cost measured on this axis: left out
        "qtuning_25x50_recheck": {"mean": 3.0, "positions_with_grad_ratio_to_full": 0.25},  # a copy: left out
    }
    assert cost_points(arms, "positions_with_grad_ratio_to_full") == {
        "zero_shot": (0.0, 2.0),
        "full": (1.0, 5.0),
        "random_25x50": (0.25, 4.0),
    }


def test_noise_summary_counts_kept_rows_and_trained_tokens_by_corruption():
    from report import noise_summary

    # per_row: id -> [times seen, times kept, response tokens seen, response tokens trained]
    cell = {
        "arm": "noisy_qtuning_25x50",
        "seed": 0,
        "score": 0.25,
        "nll": 0.5,
        "plans": {"per_row": {"a": [1, 1, 10, 5], "b": [1, 0, 10, 0], "c": [1, 1, 20, 20], "d": [1, 1, 30, 15]}},
    }
    full = {"arm": "noisy_full", "seed": 0, "score": 0.5, "nll": 0.25}  # logs no plans: trains everything
    out = noise_summary([cell, full, {"arm": "full", "seed": 0}], corrupted={"a", "b"}, rows=4)
    m = out["per_arm"]["noisy_qtuning_25x50"][0]
    assert m["corrupted_rows_kept_share"] == round(1 / 3, 4)  # a of the kept a, c, d
    assert m["corrupted_rows_kept_rate"] == 0.5  # a of a, b
    assert m["clean_rows_kept_rate"] == 1.0
    assert m["corrupted_tokens_trained_share"] == 0.25  # 5 of 20
    assert m["clean_tokens_trained_share"] == 0.7  # 35 of 50
    assert m["score"] == 25.0
    assert out["mean"]["noisy_qtuning_25x50"]["corrupted_rows_kept_rate"] == 0.5
    assert out["mean"]["noisy_full"]["corrupted_rows_kept_share"] == 0.5  # 2 of 4 rows
    assert out["mean"]["noisy_full"]["corrupted_tokens_trained_share"] == 1.0
    assert set(out["per_arm"]) == {"noisy_qtuning_25x50", "noisy_full"}  # the clean full arm is not in it
    assert noise_summary([cell], corrupted=set(), rows=0) == {}  # no corrupted ids known: nothing to report
    gap = out["mean"]["noisy_qtuning_25x50"]["kept_rate_gap"]
    assert gap["mean"] == -0.5 and gap["seeds"] == 1  # 0.5 - 1.0
    assert -1.0 <= gap["ci95"][0] <= -0.5 <= gap["ci95"][1] == 0.0  # resampling a, b: rate 0, 0.5 or 1
    assert out["mean"]["noisy_qtuning_25x50"]["tokens_trained_gap"]["mean"] == -0.45  # 0.25 - 0.7
    assert "kept_rate_gap" not in out["mean"]["noisy_full"]  # no plans: nothing to resample


def test_corrupted_gap_averages_seeds_and_is_exact_when_rows_agree():
    from report import corrupted_gap

    def cell(bad_kept, clean_kept):  # two corrupted rows, three clean; every row seen once
        rows = {f"x{i}": [1, k, 10, 10 * k] for i, k in enumerate(bad_kept)}
        rows |= {f"y{i}": [1, k, 10, 5 * k] for i, k in enumerate(clean_kept)}
        return {"plans": {"per_row": rows}}

    corrupted = {"x0", "x1"}
    # rows within a group agree, so resampling rows changes nothing; seeds: gaps 1 - 0 and 0 - 1
    both = [cell([1, 1], [0, 0, 0]), cell([0, 0], [1, 1, 1])]
    gap = corrupted_gap(both, corrupted, kept=1, seen=0)
    assert gap["mean"] == 0.0 and gap["seeds"] == 2
    assert gap["ci95"] == [-1.0, 1.0]  # resampled seeds: both first (+1), both second (-1), or one each (0)
    assert corrupted_gap(both[:1], corrupted, kept=1, seen=0) == {"mean": 1.0, "ci95": [1.0, 1.0], "seeds": 1}
    tokens = corrupted_gap(both[:1], corrupted, kept=3, seen=2)  # 20 of 20 against 0 of 30
    assert tokens["mean"] == 1.0


def test_the_recheck_passes_only_on_identical_per_item_scores():
    from report import recheck_summary

    original = {"task": "arith", "arm": "qtuning_25x50", "seed": 0, "per_item": [1.0, 0.0], "nll_sum": [2.0, 3.0]}
    same = dict(original, arm="qtuning_25x50_recheck")
    changed = dict(original, arm="qtuning_25x50_recheck", per_item=[1.0, 1.0], nll_sum=[2.0, 3.5])
    assert recheck_summary([original]) == {}
    assert recheck_summary([original, same])["passes"]
    bad = recheck_summary([original, changed])
    assert not bad["passes"] and bad["items_differing"] == 1 and bad["nll_sum_max_abs_difference"] == 0.5


def _quality(cis_history, cis_noise, jaccard_history=0.55, corrupted_history=0.19, n=5):
    tasks = ("arith", "letters", "arc")
    return {
        "jaccard_vs_whole": {
            "paper": {"16": 0.34},
            "history": {"16": jaccard_history},
            "history_supplement_low_ppl": {"16": 0.55},
        },
        "noise": {
            "paper": {"corrupted_rows_kept_share": 0.15},
            "history": {"corrupted_rows_kept_share": corrupted_history},
            "history_supplement_low_ppl": {"corrupted_rows_kept_share": 0.19},
        },
        "downstream": {
            t: {
                "history": {"mean": 1.0, "n": n, "ci95_vs_paper": list(ch)},
                "history_noise": {"mean": 1.0, "n": n, "ci95_vs_paper": list(cn)},
            }
            for t, ch, cn in zip(tasks, cis_history, cis_noise, strict=True)
        },
    }


TIES = [(-1, 1)] * 3


@pytest.mark.parametrize(
    ("quality", "default", "status"),
    [
        (_quality(TIES, TIES, n=4), "paper", "pending"),  # seeds missing
        (_quality(TIES, TIES), "paper", "decided"),  # a tie, Jaccard 0.55 < 0.6
        (_quality([(0.5, 2), (0.1, 3), (-1, 1)], TIES), "history", "decided"),  # rule (a)
        (_quality([(0.5, 2), (0.1, 3), (-2, -0.1)], TIES), "paper", "decided"),  # wins 2 but loses 1
        (_quality(TIES, TIES, jaccard_history=0.65, corrupted_history=0.12), "history", "decided"),  # rule (b)
        (_quality(TIES, TIES, jaccard_history=0.65, corrupted_history=0.16), "paper", "decided"),  # noisier
        (_quality([(0.5, 2), (-1, 1), (-1, 1)], [(0.5, 2), (0.1, 3), (-1, 1)]), "history_noise", "decided"),
    ],
)
def test_the_adoption_rule(quality, default, status):
    from report import adoption_decision

    decision = adoption_decision(quality)
    assert (decision["default"], decision["status"]) == (default, status)
    assert "PLAN.md" in decision["reason"]


def test_the_variants_meet_the_paper_arm_rerun_when_the_recheck_fails():
    from report import adoption_decision, paper_arm_for_variants

    assert paper_arm_for_variants({}) == "qtuning_25x50"  # recheck not run yet
    assert paper_arm_for_variants({"passes": True}) == "qtuning_25x50"
    assert paper_arm_for_variants({"passes": False}) == "qtuning_25x50_recheck"
    # 5 seeds of the variant, but only 3 paired with the rerun paper arm: still pending
    quality = _quality(TIES, TIES)
    for entries in quality["downstream"].values():
        entries["history"]["paired_seeds"] = 3
    decision = adoption_decision(quality)
    assert decision["status"] == "pending" and decision["checks"]["history"]["seeds_done"] == 9


def test_plot_labels_do_not_overlap():
    from report import spread_labels

    # three points at one spot, one far to the right, one high above: the stacked ones climb in steps
    anchors = [(0.1, 0.5), (0.12, 0.5), (0.5, 0.5), (0.11, 0.51), (0.1, 0.9)]
    assert spread_labels(anchors, width=0.16, height=0.035) == pytest.approx([0.5, 0.535, 0.5, 0.57, 0.9])
    assert spread_labels([]) == []


def test_selection_consistency_against_chance():
    from report import selection_consistency

    def cell(kept_ids):  # 8 rows, each seen once; kept ones trained
        return {"plans": {"per_row": {r: [1, int(r in kept_ids), 4, 2 * (r in kept_ids)] for r in "abcdefgh"}}}

    out = selection_consistency([cell("ab"), cell("ab"), cell("cd")])
    # pairs: (ab, ab) 1.0, (ab, cd) 0.0, (ab, cd) 0.0
    assert out["mean_pairwise_jaccard"] == round(1 / 3, 4)
    assert out["chance"] == round(2 / (16 - 2), 4)
    assert out["rows"] == 8 and out["rows_kept_mean"] == 2.0 and out["seeds"] == 3
    # all rows are 4 tokens long, so the quarters go by id: (a, b) kept 2 of 3, (c, d) 1 of 3, the rest never
    assert out["kept_rate_by_length_quarter"] == [round(2 / 3, 3), round(1 / 3, 3), 0.0, 0.0]
    assert selection_consistency([cell("ab")]) is None  # one seed: nothing to compare
    assert selection_consistency([cell("abcdefgh"), cell("abcdefgh")]) is None  # keeps everything


def test_rerun_reproducibility_counts_identical_plans_and_differing_items():
    from report import rerun_reproducibility

    plans = {"order": [["a", "b"]], "per_row": {"a": [1, 1, 4, 2], "b": [1, 0, 3, 0]}}
    other = {"order": [["a", "b"]], "per_row": {"a": [1, 0, 4, 0], "b": [1, 1, 3, 3]}}
    base = {"task": "arith", "arm": "qtuning_25x50", "per_item": [1.0, 0.0, 1.0], "plans": plans}
    cells = [
        dict(base, seed=0),
        dict(base, seed=0, arm="qtuning_25x50_recheck"),  # identical
        dict(base, seed=1),
        dict(base, seed=1, arm="qtuning_25x50_recheck", per_item=[0.0, 0.0, 0.0], plans=other),
        dict(base, seed=2, arm="qtuning_25x50_recheck"),  # no original for seed 2: left out
    ]
    out = rerun_reproducibility(cells)
    assert out == {"arith": {"seeds": 2, "same_plans": 1, "items_differing": [0, 2], "kept_rows_jaccard": [1.0, 0.0]}}


def test_noise_in_training_names_each_variant_by_its_noisy_arm():
    from report import noise_in_training

    mean = {
        "corrupted_rows_kept_share": 0.3,
        "corrupted_tokens_trained_share": 0.28,
        "clean_tokens_trained_share": 0.15,
        "kept_rate_gap": {"mean": 0.14, "ci95": [0.05, 0.23], "seeds": 3},
    }
    noise = {"mean": {"noisy_qtuning_hist_25x50": mean}, "per_arm": {"noisy_qtuning_hist_25x50": [{}, {}, {}]}}
    out = noise_in_training(noise)
    assert list(out) == ["history"]
    assert out["history"]["seeds"] == 3 and out["history"]["kept_rate_gap"]["ci95"] == [0.05, 0.23]
    assert noise_in_training({}) == {}
