"""Every error qtuning raises for a user's input, under one base class. Imports nothing.

    try:
        ...
    except QTuningError as exc:   # a bad config, data file, model name, path, ...: the message says which
        print(exc)

The `qtuning` command catches `QTuningError` once and prints `qtuning: error: <message>`, no
traceback, exiting with the class's `exit_code` (2 for bad command-line or config values, as
argparse does; 1 for the rest). Each class keeps a standard base too (ValueError, RuntimeError),
so `except ValueError` callers keep working. The classes are defined here, not next to the code
that raises them, so that any module can raise them without importing another (no import cycles);
their historical homes re-export them (`qtuning.engine.config.ConfigError`, `qtuning.data.DataError`, ...).
"""

from __future__ import annotations


class QTuningError(Exception):
    """Base of every qtuning error about the user's input; the message names what and where.

    Attributes:
        exit_code: What the `qtuning` command exits with when it catches this error: 1 here; subclasses
            set their own (2 for bad command-line or config values: ConfigError, UsageError, EvalError, as
            argparse does; 143 for TrainingStopped).
        same_on_every_rank: True when every rank of a distributed run raised this same error (a checkpoint
            the ranks agreed could not be written): the `qtuning` command then prints it from rank 0 only.
    """

    exit_code = 1  # what `qtuning` exits with
    same_on_every_rank = False


class ConfigError(QTuningError, ValueError):
    """A configuration value is not allowed. The message names the field, the value and what is allowed."""

    exit_code = 2


class UsageError(QTuningError, ValueError):
    """Bad command-line or recipe input; the message says what and where."""

    exit_code = 2


class DataError(QTuningError, ValueError):
    """A dataset row or file is unusable. The message names the file, the row and the field."""


class AnalysisError(DataError):
    """An analysis input or output folder is unusable; the message names the path and what was expected."""


class ReportError(DataError):
    """A run directory (or one of its files) is missing, empty or not what `qtuning train` writes."""


class PlanLogError(DataError):
    """A plan log (qtuning_plans*.jsonl) line is not valid JSON or not a plan record."""


class ScoreError(QTuningError, ValueError):
    """The scores handed to the selection are unusable (NaN, Inf, wrong shape).

    Raised by the selection (`plan_batch`, `select_samples`, `prepare_scores`, ...); also a ValueError.
    The message names the tensor and, for a non-finite token score, the first sample and position.
    """


class ModelSpecError(QTuningError, ValueError):
    """The model argument names nothing usable, or a model qtuning cannot score."""


class EvalError(QTuningError, ValueError):
    """A bad task name, records file or model directory; the message says which."""

    exit_code = 2


class AssetError(QTuningError, RuntimeError):
    """A packaged asset could not be fetched or failed its checksum."""


class MissingExtraError(QTuningError, ImportError):
    """A feature's optional dependencies (a pyproject extra) are not installed.

    The message names the feature, the missing packages and the `pip install "qtuning[extra]"` that
    adds them (e.g. the trainers without `qtuning[trl]`).
    """


class StorageError(QTuningError, OSError):
    """A file or folder could not be written or read back.

    The disk is full, a file size limit was reached, a folder is not writable, or a cached file is
    damaged. The message names the path, why, and what was kept (the last complete checkpoint, the
    cached copy, ...).
    """


class CollectiveError(QTuningError, RuntimeError):
    """A collective of the selection (all_gather, all_reduce across ranks) timed out or lost a rank.

    Another rank died or hung. The message names this rank, the collective and the step.
    """


class TrainingStopped(QTuningError, RuntimeError):
    """Training was stopped by a signal (SIGTERM) after a checkpoint was saved; the message names it."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended
