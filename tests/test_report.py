"""`qtuning report`: a real tiny training run -> one HTML page, checked in headless Chromium."""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from qtuning.cli import main
from qtuning.data.plan_log import read_plan_log
from qtuning.errors import ReportError
from qtuning.insight.run_reading import kept_by_length_quarter, per_step_from_plans, read_run
from qtuning.insight.run_report import ReportConfig, write_run_report
from tests.helpers import make_tiny_model_dir, write_jsonl_rows

OUTPUT = Path(__file__).parent / "output"  # git-ignored: the screenshot is kept here for a person to look at


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real `qtuning train` run on a tiny random model: 2 steps of 8 rows, 50% x 50%, logged every step."""
    from qtuning.training.run import run_training
    from qtuning.training.sft_config import QTuningSFTConfig, RunConfig

    root = tmp_path_factory.mktemp("report-run")
    model = make_tiny_model_dir(root / "model")
    data = write_jsonl_rows(root / "data.jsonl", 16)
    run = RunConfig(model=str(model), data=str(data), lora_r=0, eval_fraction=0.0)
    cfg = QTuningSFTConfig(
        output_dir=str(root / "run"),
        max_steps=2,
        per_device_train_batch_size=8,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        sample_ratio=0.5,
        token_ratio=0.5,
        max_length=128,
        probe_precision="same",
        seed=0,
    )
    run_training(run, cfg)
    return root / "run"


def _visible_tokens(page: str) -> list[tuple[str, str, str]]:
    """(class, title, text) of every token span of the page."""
    return [
        (c, html.unescape(t), html.unescape(x))
        for c, t, x in re.findall(r'<span class="tok (kept|pruned)" title="([^"]*)">([^<]*)</span>', page)
    ]


def test_report_of_a_real_run(run_dir, tmp_path):
    out = write_run_report(ReportConfig(run_dir=str(run_dir), output=str(tmp_path / "report.html")))
    page = out.read_text()
    assert page.count('<img class="plot"') == 6  # kept fraction, quadrants, alpha/beta, kept tokens, loss, tokens
    for title in (
        "Kept fraction of samples",
        "Quadrant shares",
        "alpha / beta",
        "Kept fraction of the response tokens",
        "Training loss",
        "Response tokens scored vs trained",
    ):
        assert title in page
    assert "not logged" not in page and "<script" not in page
    assert "Which samples it kept, by response length" in page
    # what it ran with: the summary's environment and input fingerprints, as a table
    summary = json.loads((run_dir / "qtuning_summary.json").read_text())
    assert (
        "What it ran with" in page
        and f"<td>package torch</td><td>{summary['environment']['packages']['torch']}" in page
    )
    assert f"sha256 {summary['inputs']['data']['sha256']}" in page
    # The token view: every logged Q2 sample, its tokens decoded, pruned ones marked, s_i on hover
    plans = read_plan_log(run_dir / "qtuning_plans.jsonl")
    quarters = kept_by_length_quarter(plans)
    assert sum(q["samples_scored"] for q in quarters) == sum(len(p["samples"]["role"]) for p in plans)
    assert str(quarters[0]["kept_share"]) in page
    logged = [t for p in plans for t in p["tokens"]]
    assert logged, "the run kept no Q2 sample: the token view would be empty"
    spans = _visible_tokens(page)
    assert len(spans) == sum(len(t["token_ids"]) for t in logged)
    assert sum(c == "pruned" for c, _, _ in spans) == sum(not k for t in logged for k in t["kept"]) > 0
    first = logged[0]
    assert spans[0][1] == f"s = {first['score'][0]:.4g} ({'kept' if first['kept'][0] else 'pruned'})"
    text = "".join(x for _, _, x in spans[: len(first["token_ids"])]).replace("\u21b5", "")
    from transformers import AutoTokenizer

    assert text == AutoTokenizer.from_pretrained(run_dir).decode(first["token_ids"])
    assert "The number is" in text  # the response of the training rows, decoded with the run's tokenizer
    # the default output path
    assert write_run_report(ReportConfig(run_dir=str(run_dir))) == run_dir / "qtuning_report.html"


def test_per_step_statistics_by_hand():
    def line(step, roles, quadrants, trainable, kept_tokens, alpha):
        return {
            "step": step,
            "alpha": alpha,
            "beta": alpha,
            "converged": True,
            "samples": {
                "role": roles,
                "quadrant": quadrants,
                "trainable_tokens": trainable,
                "kept_tokens": kept_tokens,
            },
        }

    plans = [
        line(1, [2, 0], [2, 1], [10, 6], [5, 0], 0.2),
        line(1, [0, 4], [3, 4], [4, 8], [0, 8], 0.4),
        line(2, [0, 0, 2, 0], [1, 1, 2, 3], [3, 3, 4, 2], [0, 0, 2, 0], 0.3),
    ]
    steps = per_step_from_plans(plans)
    assert steps[1]["kept_sample_fraction"] == 0.5  # 2 of 4
    assert steps[1]["kept_token_fraction"] == 13 / 28
    assert (steps[1]["tokens_scored"], steps[1]["tokens_trained"]) == (28, 13)
    assert steps[1]["alpha"] == pytest.approx(0.3)
    assert [steps[1][f"quadrant_q{q}"] for q in range(1, 5)] == [0.25, 0.25, 0.25, 0.25]
    assert steps[2]["kept_sample_fraction"] == 0.25 and steps[2]["quadrant_q1"] == 0.5


def test_kept_share_by_response_length_quarter_by_hand():
    plans = [
        {"step": 1, "samples": {"trainable_tokens": [10, 2, 7, 3], "role": [0, 2, 4, 0]}},
        {"step": 2, "samples": {"trainable_tokens": [1, 9, 5, 8], "role": [4, 0, 2, 0]}},
    ]
    # sorted by length: 1(Q4) 2(Q2) | 3(-) 5(Q2) | 7(Q4) 8(-) | 9(-) 10(-)
    quarters = kept_by_length_quarter(plans)
    assert [q["response_tokens"] for q in quarters] == ["1-2", "3-5", "7-8", "9-10"]
    assert [q["kept_share"] for q in quarters] == [1.0, 0.5, 0.5, 0.0]
    assert [q["q2_share"] for q in quarters] == [0.5, 0.5, 0.0, 0.0]
    assert [q["q4_share"] for q in quarters] == [0.5, 0.0, 0.5, 0.0]
    assert all(q["samples_scored"] == 2 for q in quarters)
    assert kept_by_length_quarter(plans[:0]) == []


def test_a_run_without_plan_log_is_reported_from_its_log_history(tmp_path):
    """pruning_method none (or plan_log off): the curves come from trainer_state.json, no token view."""
    history = [
        {
            "step": s,
            "loss": 2.0 / s,
            "qtuning/kept_sample_fraction": 1.0,
            "qtuning/alpha": 0.0,
            "qtuning/beta": 0.0,
            "qtuning/kept_token_fraction": 1.0,
            "qtuning/tokens_scored": 0,
            "qtuning/tokens_trained": 100 * s,
            **{f"qtuning/quadrant_q{q}": 0.0 for q in range(1, 5)},
        }
        for s in (1, 2, 3)
    ]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": history + [{"step": 3, "train_loss": 1}]}))
    page = write_run_report(ReportConfig(run_dir=str(tmp_path))).read_text()
    assert page.count('<img class="plot"') == 6 and "trainer_state.json&#x27;s log_history" in page
    assert "No Q2 token details in this run" in page and 'class="tok' not in page


# ---------------------------------------------------------------------------------- headless Chromium


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium on PATH: install Debian's chromium package (scripts/setup.sh does, as root)")


def _load(page: Path, screenshot: Path, height: int = 1600) -> tuple[str, list[str]]:
    """Load a page in headless Chromium: its DOM after load, and every console message it logged."""
    proc = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--enable-logging=stderr",
            "--v=0",
            "--hide-scrollbars",
            f"--window-size=1200,{height}",
            f"--screenshot={screenshot}",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


def test_the_console_check_catches_errors(tmp_path):
    """The harness itself: a page that logs an error must be caught (else the next test proves nothing)."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><p>x</p><script>console.error("boom-marker")</script></body></html>')
    _, console = _load(page, tmp_path / "bad.png", height=200)
    assert any("boom-marker" in line for line in console)


def test_report_in_headless_chromium(run_dir, tmp_path):
    import numpy as np
    from matplotlib.image import imread

    out = write_run_report(ReportConfig(run_dir=str(run_dir), output=str(tmp_path / "report.html")))
    screenshot = tmp_path / "report.png"
    dom, console = _load(out, screenshot, height=5200)
    assert console == [], console  # no console error (no message at all: the page has no script)
    assert dom.count('<img class="plot"') == 6 and 'class="token-view"' in dom
    assert 'class="tok pruned"' in dom
    OUTPUT.mkdir(exist_ok=True)
    shutil.copy(screenshot, OUTPUT / "report.png")
    pixels = (imread(screenshot)[..., :3] * 255).round().astype(int)  # (H, W, 3)

    def share(rgb, tol=6):
        return float((np.abs(pixels - np.array(rgb)).max(axis=-1) <= tol).mean())

    assert share((0x1F, 0x77, 0xB4)) > 1e-4  # the plots' first line colour: the PNGs were decoded and drawn
    assert share((0xFF, 0xCD, 0xD2)) > 1e-5  # the pruned tokens' background: the token view is on screen


# ---------------------------------------------------------------------------------- bad input


def test_bad_run_directories_are_named(tmp_path, capsys):
    with pytest.raises(ReportError, match=r"nope: no such directory; expected the output_dir of a `qtuning train`"):
        read_run(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError, match=r"empty: empty; expected .*trainer_state.json"):
        read_run(empty)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hi")
    with pytest.raises(ReportError, match=r"junk: holds notes.txt; expected"):
        read_run(junk)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "trainer_state.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"broken/trainer_state.json: not valid JSON"):
        read_run(broken)
    (broken / "trainer_state.json").write_text(json.dumps({"log_history": []}))
    (broken / "qtuning_plans.jsonl").write_text('{"step": 1, "samples": {}}\n{"step": 2, "samp')
    with pytest.raises(ReportError, match=r"qtuning_plans.jsonl: line 2 is not valid JSON"):
        read_run(broken)
    (broken / "qtuning_plans.jsonl").unlink()
    with pytest.raises(ReportError, match="logged no training step yet"):
        read_run(broken)
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "nope: no such directory" in capsys.readouterr().err


def test_one_plan_log_reader_strict_for_reports_and_lenient_on_resume(tmp_path):
    from qtuning.data.plan_log import PlanLog, read_plan_log, read_run_plans
    from qtuning.errors import PlanLogError

    log = tmp_path / "qtuning_plans.jsonl"
    log.write_text('{"step": 1, "samples": {}}\n\n{"step": 2, "samples": {}}\n{"step": 3, "samp')
    with pytest.raises(PlanLogError, match=r"qtuning_plans.jsonl: line 4 is not valid JSON"):
        read_plan_log(log)
    PlanLog(log, keep_up_to_step=1).close()  # resuming at step 1 drops step 2 and the line cut short
    assert read_plan_log(log) == [{"step": 1, "samples": {}}]
    (tmp_path / "qtuning_plans.rank1.jsonl").write_text('{"step": 0, "rank": 1, "samples": {}}\n')
    assert [(p["step"], p.get("rank", 0)) for p in read_run_plans(tmp_path)] == [(0, 1), (1, 0)]
