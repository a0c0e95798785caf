"""`qtuning ab`: the recipe against a baseline over paired seeds, scored on held-out records, compared;
rerun, it skips what is done; bad input fails before any training, by name."""

import json

import pytest

from tests.helpers import make_tiny_model_dir, run_cli

pytestmark = pytest.mark.slow


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def ab_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ab")
    model = make_tiny_model_dir(root / "model")
    train = [
        {"prompt": f"Add {i} and {i + 1}.", "completion": f"{i} + {i + 1} = {2 * i + 1}. " * (1 + i % 3)}
        for i in range(24)
    ]
    heldout = [{"id": f"h{i}", "prompt": f"Add {i} and 3.", "response": f"{i} + 3 = {i + 3}."} for i in range(50, 56)]
    recipe = root / "recipe.yaml"
    recipe.write_text(
        "\n".join(
            [
                f"model: {model}",
                f"data: {_write_jsonl(root / 'train.jsonl', train)}",
                "lora_r: 0",
                "eval_fraction: 0",
                "max_steps: 2",
                "per_device_train_batch_size: 8",
                "sample_ratio: 0.5",
                "token_ratio: 0.5",
                "max_length: 128",
                "save_strategy: 'no'",
                "report_to: none",
                "probe_precision: same",
                "learning_rate: 0.001",
            ]
        )
        + "\n"
    )
    return root, recipe, _write_jsonl(root / "heldout.jsonl", heldout)


def test_ab_trains_both_arms_per_seed_scores_them_and_compares(ab_setup):
    root, recipe, heldout = ab_setup
    out = root / "out"
    base = ["ab", "--config", str(recipe), "--heldout", str(heldout), "--seeds", "2", "--output_dir", str(out)]
    args = [*base, "--train_args=--max_steps 3"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = json.loads((out / "qtuning_s0" / "qtuning_summary.json").read_text())
    r = round(first["tokens_trained"] / (0.5 * first["trainable_tokens_scored"]), 3)  # rule R, by hand
    assert 0 < r <= 1 and f"token_ratio {r:g} of their tokens" in proc.stdout
    for arm in ("qtuning", "random"):
        for seed in (0, 1):
            run = json.loads((out / f"{arm}_s{seed}" / "qtuning_run.json").read_text())
            assert run["seed"] == seed and run["max_steps"] == 3  # the recipe says 2: --train_args won
            assert run["sample_pruner"] == ("random" if arm == "random" else "qtuning"), run["sample_pruner"]
            assert run["token_ratio"] == (r if arm == "random" else 0.5)
    assert "ab: per run, qtuning trained 12 samples and" in proc.stdout  # 3 steps x 8 rows x 0.5
    evals = {
        f"{arm}_s{s}": json.loads((out / "evals" / f"{arm}_s{s}.json").read_text())
        for arm in ("qtuning", "random")
        for s in (0, 1)
    }
    assert all([i["id"] for i in e["samples"]["nll"]] == [f"h{i}" for i in range(50, 56)] for e in evals.values())
    assert evals["qtuning_s0"]["samples"]["nll"] != evals["qtuning_s1"]["samples"]["nll"]  # another seed, another model
    (entry,) = json.loads((out / "ab.json").read_text())["comparisons"]
    assert (entry["task"], entry["metric"], entry["seeds"], entry["items"]) == ("nll", "nll", 2, 6)
    # A's mean: the summed NLL over the summed response tokens of both qtuning runs
    items = [i for s in (0, 1) for i in evals[f"qtuning_s{s}"]["samples"]["nll"]]
    assert entry["a_mean"] == pytest.approx(
        sum(i["nll"] for i in items) / sum(i["nll_tokens"] for i in items), abs=1e-4
    )
    assert entry["sesoi"] == 0.01 and entry["verdict"] in ("qtuning better", "random better", "equivalent", "undecided")
    assert "qtuning - random" in proc.stdout and "nll (lower is better)" in proc.stdout
    assert "2 paired run(s): indicative only" in proc.stdout
    # rerun: everything is done, nothing trains again, the comparison is the same
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("trained and scored already") == 4 and "training" not in again.stdout
    assert json.loads((out / "ab.json").read_text())["comparisons"][0] == entry
    # another task: every model is scored again, none trained again
    more = run_cli(*args, "--tasks", f"squad={heldout}")
    assert more.returncode == 0, more.stderr[-3000:]
    assert more.stdout.count("scoring") == 4 and "training" not in more.stdout
    metrics = {c["metric"] for c in json.loads((out / "ab.json").read_text())["comparisons"]}
    assert metrics == {"nll", "exact_match", "f1"}
    # another recipe in the same folder: an error that names the setting, nothing reused
    other = run_cli(*base, "--train_args=--max_steps 4")
    assert other.returncode == 2 and "max_steps: 3 there, 4 now" in other.stderr, other.stderr[-2000:]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--heldout", "MISSING"], "records file MISSING does not exist"),
        (["--heldout", "BAD"], "bad.jsonl: row 1 (id 'b2'): the response is empty"),
        (["--train_args=--seed 3"], "--train_args may not set --seed"),
        (["--train_args=--overwrite-output-dir true"], "may not set --overwrite-output-dir"),
        (["--sesoi", "nll"], "--sesoi: 'nll' is not METRIC=VALUE"),
        (["--seeds", "0"], "--seeds 0: at least 1"),
    ],
)
def test_bad_input_fails_before_any_training(ab_setup, tmp_path, extra, message):
    root, recipe, heldout = ab_setup
    bad = _write_jsonl(
        tmp_path / "bad.jsonl",
        [{"id": "b1", "prompt": "p", "response": "r"}, {"id": "b2", "prompt": "p", "response": ""}],
    )
    extra = [str(bad) if a == "BAD" else str(tmp_path / "missing.jsonl") if a == "MISSING" else a for a in extra]
    message = message.replace("MISSING", str(tmp_path / "missing.jsonl"))
    argv = ["ab", "--config", str(recipe), "--heldout", str(heldout), "--output_dir", str(tmp_path / "out"), *extra]
    proc = run_cli(*argv)
    assert proc.returncode in (1, 2) and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
