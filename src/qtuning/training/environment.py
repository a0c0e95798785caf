"""What a run ran with and on: library versions, the machine, and fingerprints of its model and data.

    environment(args.device, args.world_size)   # qtuning_summary.json's "environment" (every trainer)
    input_fingerprint("data/train.jsonl")        # `qtuning train` adds "inputs": {"model": ..., "data": ...}

Two runs of one recipe that disagree in their last digits usually differ here (another torch, another
CPU, another copy of the data); `qtuning report` shows both blocks so that a reader can check.
A built-in model or data set is recorded by name: its files are pinned by sha256 in this qtuning
version (recorded among the packages). A local file or folder is hashed (sha256), except over
HASH_LIMIT_BYTES (a 7B checkpoint): then its size (and a folder's file names and sizes) only. A file
that cannot be read is recorded with the error: fingerprinting never stops a run.
"""

from __future__ import annotations

import hashlib
import os
import platform
from importlib import metadata
from pathlib import Path

from ..data.assets import sha256_of

# The packages whose version can change a run's numbers, in the order they are shown.
PACKAGES = (
    "qtuning",
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "numpy",
    "deepspeed",
    "axolotl",
    "llamafactory",
)
HASH_LIMIT_BYTES = 2 << 30  # hashing 2 GiB takes a few seconds; a larger folder is listed, not hashed


def package_versions() -> dict[str, str]:
    """{package: version} of the PACKAGES installed here (absent ones are left out)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def environment(device, world_size: int) -> dict:
    """The software and machine of this process: python, platform, CPU count, the device it trains on
    (with the accelerator's name where there is one), the number of ranks, and package_versions()."""
    import torch

    accelerator = None
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        accelerator = torch.cuda.get_device_name(device)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "accelerator": accelerator,
        "torch_build": torch.__version__,  # e.g. 2.13.0+cpu: the build, not only the release
        "cuda": torch.version.cuda,
        "world_size": int(world_size),
        "packages": package_versions(),
    }


def input_fingerprint(spec: str, builtin_names=()) -> dict:
    """How to recognise a model or data argument again; never raises (a record is not worth a run).

    A local file: {"path", "bytes", "sha256"}. A local folder: {"path", "files", "bytes", "sha256"}, the
    sha256 taken over each file's relative path and sha256 in sorted order; hidden entries (a ".cache"
    of download metadata, ".git") are left out, linked folders are followed once. Over
    HASH_LIMIT_BYTES the sha256 is None (a folder then lists "files_listed": [[relative path, bytes],
    ...]). A file that cannot be read: {"path", "error"}. A name in `builtin_names`: {"builtin": name}.
    Anything else (a hub id): {"name": spec}.
    """
    path = Path(str(spec)).expanduser()
    try:
        if path.is_file():
            size = path.stat().st_size
            digest = sha256_of(path) if size <= HASH_LIMIT_BYTES else None
            return {"path": str(path.resolve()), "bytes": size, "sha256": digest}
        if path.is_dir():
            return _folder_fingerprint(path)
    except OSError as exc:  # unreadable, or removed while we read it: say so, train anyway
        return {"path": str(path), "error": f"{type(exc).__name__}: {exc.strerror or exc}"}
    if str(spec).lower() in {str(n).lower() for n in builtin_names}:
        return {"builtin": str(spec)}
    return {"name": str(spec)}


def _folder_files(root: Path) -> list[tuple[str, Path]]:
    """(relative path, path) of every regular file under root, sorted; hidden entries skipped; linked
    folders followed, each real folder visited once (a link loop ends)."""
    found, seen = [], set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in files:
            full = Path(folder) / name
            if not name.startswith(".") and full.is_file():  # a broken link is not a file
                found.append((str(full.relative_to(root)), full))
    return sorted(found)


def _folder_fingerprint(path: Path) -> dict:
    files = _folder_files(path)
    sizes = [(relative, full.stat().st_size) for relative, full in files]
    total = sum(size for _, size in sizes)
    out = {"path": str(path.resolve()), "files": len(files), "bytes": total}
    if total > HASH_LIMIT_BYTES:
        return {**out, "sha256": None, "files_listed": [list(item) for item in sizes]}
    digest = hashlib.sha256()
    for relative, full in files:
        digest.update(f"{relative}\0{sha256_of(full)}\n".encode())
    return {**out, "sha256": digest.hexdigest()}
