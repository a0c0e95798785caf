"""benchmarks/replicate.py's data: a held-out split no training row overlaps, and the noise it injects."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import replicate  # noqa: E402


def _rows(path):
    return [json.loads(line) for line in open(path)]


def test_split_is_disjoint_and_the_noise_is_a_derangement(tmp_path, monkeypatch):
    monkeypatch.setattr(replicate, "WORK", tmp_path)
    paths = replicate.prepare_data()
    train, noisy, held_out = (_rows(paths[k]) for k in ("train", "train_noisy", "eval"))
    assert len(train) == replicate.TRAIN_SIZE and len(held_out) == replicate.EVAL_SIZE
    norm = replicate._norm_question
    assert not {norm(r["prompt"]) for r in train} & {norm(r["prompt"]) for r in held_out}
    assert len({norm(r["prompt"]) for r in train}) == len(train)  # no question twice in training
    assert [r["id"] for r in noisy] == [r["id"] for r in train]
    swapped = [i for i, (a, b) in enumerate(zip(train, noisy)) if a["completion"] != b["completion"]]
    meta = json.loads((tmp_path / "data_meta.json").read_text())
    assert meta["swapped_rows"] == int(replicate.NOISE_FRACTION * replicate.TRAIN_SIZE)
    # every corrupted row carries another training row's answer, and the corrupted set is what meta lists
    answers = {r["completion"] for r in train}
    assert all(noisy[i]["completion"] in answers for i in swapped)
    assert {train[i]["id"] for i in swapped} == set(meta["corrupted_ids"])
    assert meta["truly_corrupted_rows"] == len(swapped) >= 0.9 * meta["swapped_rows"]
    # deterministic: a second call reads the same files
    assert replicate.prepare_data() == paths and _rows(paths["train"]) == train


def test_the_benchmarks_share_one_base_recipe_and_each_keeps_its_frozen_values():
    """benchmarks/recipe_base.yaml is the one source of the benchmarks' training settings; each script's
    BASE is it plus a few overrides, and must stay exactly what its (frozen) plan ran with."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks" / "evidence"))
    import suite
    import suite_v2

    lora = dict(model="smollm2-135m-instruct", lora_r=8, lora_alpha=16, lora_dropout=0.0, learning_rate=3e-4)
    schedule = dict(lr_scheduler_type="cosine", warmup_steps=0.05, per_device_train_batch_size=16)
    quiet = dict(eval_fraction=0.0, eval_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True)
    common = dict(**lora, **schedule, **quiet, gradient_accumulation_steps=1, plan_log=True)
    assert replicate.BASE == dict(**common, max_length=128, num_train_epochs=1, logging_steps=8, plan_log_tokens=False)
    assert suite.BASE == dict(**common, max_length=320, num_train_epochs=1, logging_steps=4, plan_log_tokens=False)
    assert suite_v2.BASE == dict(
        **common,
        max_length=320,
        num_train_epochs=3,
        logging_steps=8,
        plan_log_tokens=True,
        probe_precision="same",
    )
    assert type(replicate.BASE["learning_rate"]) is float and replicate.BASE["eval_strategy"] == "no"
