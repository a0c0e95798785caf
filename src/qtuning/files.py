"""Writing files so that nothing is lost: outputs checked before the work, atomic replacement, a lock
between processes, and disk-full errors named. Imports the standard library and qtuning.errors only.

    out = check_output_file(args.output, "--output", UsageError)   # before the model loads: fail in a second
    atomic_write_text(out, text)                                    # a reader sees the old file or the new one
    with file_lock(cache / ".fetch.lock"):                          # one process fetches, the other waits
        ...
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import QTuningError, StorageError

try:
    import fcntl
except ImportError:  # not POSIX: no lock (two processes fetching at once may each download)
    fcntl = None

# errno values of "the disk (or a quota, or a file size limit) is full"
DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
# how safetensors and torch.save report a failed write: safetensors names the OS error; torch.save's
# zip writer only says that its stream failed ("basic_ios::clear: iostream error", "unexpected pos")
_WRITE_FAILED_TEXT = (
    "no space left",
    "file too large",
    "disk quota",
    "os error 27",
    "os error 28",
    "os error 122",
    "iostream error",
    "inline_container",
    "file write failed",
    "error while serializing",
)


def is_write_failure(exc: BaseException) -> bool:
    """True for an error that says a file could not be written because the disk, a quota or a file size
    limit is full: an OSError with such an errno, or what torch.save and safetensors raise when a write
    fails (a RuntimeError, a SafetensorError), looked for in the exception and its cause or context."""
    for e in (exc, exc.__cause__, exc.__context__):
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return True
        if e is not None and not isinstance(e, OSError) and any(t in str(e).lower() for t in _WRITE_FAILED_TEXT):
            return True
    return False


def reason(exc: BaseException, path: str | os.PathLike | None = None) -> str:
    """Why a path cannot be written, in words: 'No space left on device', '<a parent> is a file, not a folder'."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)) and path is not None:
        for parent in [Path(path), *Path(path).parents]:
            if parent.exists() and not parent.is_dir():
                return f"{parent} is a file, not a folder"
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        return f"{exc.strerror}{where}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def write_failure(exc: BaseException, folder: str | os.PathLike) -> str:
    """Why a write into `folder` failed, in one line: the OS error, the room left on that disk, and the file
    size limit of this process (ulimit -f) when there is one."""
    import re
    import shutil

    e = next((e for e in (exc, exc.__cause__, exc.__context__) if isinstance(e, OSError) and e.strerror), None)
    text = re.search(r"I/O error: ([^(]+)", str(exc))  # safetensors: "... I/O error: File too large (os error 27)"
    words = e.strerror if e is not None else text.group(1).strip() if text else "a write failed (no reason given)"
    facts = []
    with contextlib.suppress(OSError):
        existing = next(p for p in [Path(folder), *Path(folder).parents] if p.exists())
        facts.append(f"{shutil.disk_usage(existing).free / 2**20:.0f} MiB free on its disk")
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            facts.append(f"a file size limit of {limit} bytes (ulimit -f)")
    return "; ".join([words, *facts])


def _check_writable(folder: Path) -> None:
    """Create `folder` and write (then remove) a file in it; an OSError says why not."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, probe = tempfile.mkstemp(dir=folder, prefix=".qtuning-write-check-")
    os.close(handle)
    os.unlink(probe)


def check_output_folder(folder: str | os.PathLike, what: str, error: type[QTuningError] = StorageError) -> Path:
    """Create `folder` (with its parents) and check that a file can be written in it, before any work.

    Raises `error` (a QTuningError class) naming `what`, the folder and why (a parent is a file, no
    permission, a read-only file system, the disk is full)."""
    folder = Path(folder).expanduser()
    try:
        _check_writable(folder)
    except OSError as exc:
        raise error(f"{what} {folder} cannot be written: {reason(exc, folder)}") from exc
    return folder


def check_output_file(path: str | os.PathLike, what: str, error: type[QTuningError] = StorageError) -> Path:
    """Check, before any work, that the output file `path` can be written: its folder is created and
    writable, the path is not a folder, an existing file can be opened for writing (not truncated).
    Raises `error` naming `what`, the path and why."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise error(f"{what} {path} is a folder; expected a file name")
    try:
        _check_writable(path.parent)
        if path.exists():
            with open(path, "a"):
                pass
    except OSError as exc:
        raise error(f"{what} {path} cannot be written: {reason(exc, path)}") from exc
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to `path` to write to (not created: the writer creates it, with the usual
    permissions); on success it replaces `path` in one step (os.replace), on failure it is removed: a
    reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically (a temporary file, then os.replace)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock between processes (fcntl.flock on `path`, created if needed), released on exit,
    also when the holder dies. No-op where fcntl does not exist."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
