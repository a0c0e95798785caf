"""What a run ran with and on: library versions, the machine, and fingerprints of its model and data.

    environment(args.device, args.world_size)   # qtuning_summary.json's "environment" (every trainer)
    input_fingerprint("data/train.jsonl")        # `qtuning train` adds "inputs": {"model": ..., "data": ...}

Two runs of one recipe that disagree in their last digits usually differ here (another torch, another
CPU, another copy of the data); `qtuning report` shows both blocks so that a reader can check.
A built-in model or data set is recorded by name: its files are pinned by sha256 in this qtuning
version (recorded among the packages). A local file or folder is hashed (sha256), except a folder over
HASH_LIMIT_BYTES (a 7B checkpoint), whose files are recorded by name and size only.
"""

from __future__ import annotations

import hashlib
import os
import platform
from importlib import metadata
from pathlib import Path

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


def sha256_of_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def input_fingerprint(spec: str, builtin_names=()) -> dict:
    """How to recognise a model or data argument again.

    A local file: {"path", "bytes", "sha256"}. A local folder: {"path", "files", "bytes", "sha256"}, the
    sha256 taken over each file's relative path and sha256 in sorted order (None over HASH_LIMIT_BYTES,
    with "files_listed": [[relative path, bytes], ...] instead). A name in `builtin_names`:
    {"builtin": name}. Anything else (a hub id): {"name": spec}.
    """
    path = Path(str(spec)).expanduser()
    if path.is_file():
        return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": sha256_of_file(path)}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        sizes = [(str(p.relative_to(path)), p.stat().st_size) for p in files]
        total = sum(size for _, size in sizes)
        out = {"path": str(path.resolve()), "files": len(files), "bytes": total}
        if total > HASH_LIMIT_BYTES:
            return {**out, "sha256": None, "files_listed": [list(item) for item in sizes]}
        digest = hashlib.sha256()
        for p, (relative, _) in zip(files, sizes):
            digest.update(f"{relative}\0{sha256_of_file(p)}\n".encode())
        return {**out, "sha256": digest.hexdigest()}
    if str(spec).lower() in {str(n).lower() for n in builtin_names}:
        return {"builtin": str(spec)}
    return {"name": str(spec)}
