"""qtuning's run-time notices: one line each on stderr, `[qtuning] <message>`, through the `qtuning` logger.

What qtuning tells the user while it runs (the failure signatures of the selection, rows left out, a
setting that works against another) is a notice, not a Python warning: no source line, no category, and
each kind shown once (or rate-limited) by the caller. `notice(message)` logs at INFO on the logger
`qtuning`; on first use, if nobody has configured that logger, it gets one handler that writes to the
current `sys.stderr` with the `[qtuning] ` prefix and does not propagate (the root logger's handlers would
print the line twice). To route the notices elsewhere, configure `logging.getLogger("qtuning")` before the
run (add a handler, or set `propagate = True`); to silence them, set its level to WARNING.

Imports the standard library only (the package root's rank in the layering, tests/test_layering.py).
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "qtuning"
PREFIX = "[qtuning] "

_SEEN: set[str] = set()  # kinds shown once per process (notice(..., key=...) without a `seen` set)


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever `sys.stderr` is when a line is written (pytest's capsys/capfd and
    contextlib.redirect_stderr replace it after the handler is made)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the current sys.stderr is used instead
        pass


def logger() -> logging.Logger:
    """The `qtuning` logger, with its `[qtuning] ` stderr handler unless one was configured already."""
    log = logging.getLogger(LOGGER_NAME)
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(PREFIX + "%(message)s"))
        log.addHandler(handler)
        log.propagate = False
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)
    return log


def notice(message: str, *, key: str | None = None, seen: set[str] | None = None) -> bool:
    """Log `message` as one `[qtuning]` line; with a `key`, only the first time that key is seen (in
    `seen`, e.g. a run's own set, else once per process). Returns whether the line was logged."""
    if key is not None:
        seen = _SEEN if seen is None else seen
        if key in seen:
            return False
        seen.add(key)
    logger().info(message)
    return True
