"""Typed errors a user can act on.

Every data error names the file, the column, how many rows are affected and one example row,
so a user can find and fix the input without reading a traceback.
"""

from __future__ import annotations

from typing import Any


class RotationDLError(Exception):
    """Base class for errors caused by user input or configuration (CLI exits non-zero)."""


class ConfigError(RotationDLError):
    """A configuration value is missing, unknown or inconsistent."""


class DataError(RotationDLError):
    """Input data is unusable; carries where, what and how many."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        column: str | None = None,
        count: int | None = None,
        example: Any = None,
        unit: str = "row",
        at_least: bool = False,
    ) -> None:
        self.problem = problem
        self.unit = unit
        self.at_least = at_least
        self.file = file
        self.column = column
        self.count = count
        self.example = example
        super().__init__(self._format())

    def _format(self) -> str:
        parts = [f"{self.file or '<input>'}:"]
        if self.column is not None:
            parts.append(f"column '{self.column}':")
        problem = self.problem
        if self.count is not None:
            one = self.count == 1 and not self.at_least
            parts.append(f"{'at least ' if self.at_least else ''}{self.count} {self.unit}"
                         f"{'' if one else 's'}")  # fmt: skip
            if one:  # "1 row is ...", not "1 row are ..."
                verb, space, rest = problem.partition(" ")
                problem = _SINGULAR.get(verb, verb) + space + rest
        parts.append(problem)
        text = " ".join(parts)
        if self.example is not None:
            text += f"; e.g. {self.example}"
        return text


# problems are worded for many rows ("are null"); one row takes the singular verb
_SINGULAR = {
    "are": "is", "have": "has", "repeat": "repeats", "come": "comes", "lie": "lies",
    "use": "uses", "fall": "falls", "appear": "appears", "overlap": "overlaps",
}  # fmt: skip


class SchemaError(DataError):
    """Columns are missing or have the wrong dtype."""


class ValueRangeError(DataError):
    """Values are NaN/inf, non-positive, negative or inconsistent (e.g. high < low)."""


class DuplicateRowsError(DataError):
    """The same (symbol, ts) appears more than once."""


class UnsortedInputError(DataError):
    """Rows of a symbol are not in increasing time order."""


class SessionError(DataError):
    """Timestamps fall outside the trading session or off the bar grid."""


class BarSizeError(DataError):
    """The bar size cannot be detected, is mixed, or does not match the store."""


class EmptyInputError(DataError):
    """The input holds no rows (or no files)."""


class UnreadableFileError(DataError):
    """A file is missing, truncated or not in the expected format."""


class SymbolFormatError(DataError):
    """Symbols that cannot be placed on an exchange under the configured symbol format."""


class UnitsError(DataError):
    """Volume, amount and price disagree: a unit (lots, 10,000s) is not what the mapping says."""


class NonTradingDayError(DataError):
    """Bars dated on weekends, exchange holidays or after today."""


class AdjustmentError(DataError):
    """Prices look unadjusted: too many moves beyond the daily price limit."""


class UnmappedSymbolError(DataError):
    """Symbols have no industry in the classification on the bar's date."""


class StoreError(RotationDLError):
    """The canonical store is inconsistent with the data being written to or read from it."""


class StoreLockedError(StoreError):
    """Another writer holds the store's writer lock for longer than the wait allows."""


class RunLockedError(RotationDLError):
    """Another process is writing the same run's output folder."""


class ModelFileError(RotationDLError):
    """An ONNX model file is missing, truncated, altered or not a rotation_dl model."""


class ScoringError(RotationDLError):
    """The model cannot score this data (spec mismatch, missing industries, short history)."""


class OutputError(RotationDLError):
    """The environment refused a write or read: disk full, read-only or missing folder,
    permission denied. The message names the path and the fix."""


class TrainingStopped(BaseException):
    """Training was stopped by a signal (SIGTERM, SIGINT); finished epochs' checkpoints are kept.

    A BaseException, like KeyboardInterrupt: library code that catches Exception (inspect,
    loggers) must not swallow or re-type a stop. The CLI reports it in one line."""

    def __init__(self, message: str, exit_status: int = 128 + 15) -> None:
        super().__init__(message)
        self.exit_status = exit_status  # the shell's convention: 128 + the signal's number


class CheckpointError(RotationDLError):
    """A checkpoint cannot be loaded safely (truncated, or holds objects the weights-only
    loader refuses)."""


def _system_temp(path: str) -> bool:
    """Whether `path` is a temporary file in the system's temp folder (tmpXXXX)."""
    import tempfile
    from pathlib import Path

    p = Path(path)
    return p.parent == Path(tempfile.gettempdir()) and p.name.startswith("tmp")


def environment_error(exc: OSError, writing: str | None = None) -> OutputError | None:
    """The typed, one-line form of an OSError the environment raised, or None when it is not
    one of the environment's failures (disk full, read-only, permission, missing folder).
    `writing`: what the command writes, named when the error carries no path."""
    import errno
    import re

    path = str(exc.filename) if exc.filename else None
    if path:  # an atomic write's temporary name: the file it was writing is what to name
        path = re.sub(r"/\.([^/]+)\.(\d+-)?[0-9a-f]{32}\.tmp$", r"/\1", path)
    if path and writing and _system_temp(path):  # a library's staging file (Lightning's
        path = writing  # checkpoint saves stage in the system temp dir, then move)
    path = path or writing or "a file of this run's outputs (paths.output_dir, paths.checkpoints)"
    fixes = {
        errno.ENOSPC: "the disk is full: free space, or point paths.output_dir (and "
        "paths.checkpoints) at another disk",
        errno.EDQUOT: "the disk quota is exceeded: free space, or write elsewhere",
        errno.EROFS: "the file system is read-only: point paths.output_dir at a writable folder",
        errno.EACCES: "permission denied: make it writable, or point paths.output_dir at a "
        "folder you can write",
        errno.EPERM: "operation not permitted: point paths.output_dir at a folder you own",
        errno.ENOENT: "no such file or folder: check the path (or create the folder)",
        errno.ENOTDIR: "a path component is a file, not a folder: check the path",
        errno.EFBIG: "the file is larger than this process may write (a file-size limit, "
        "ulimit -f): raise the limit, or write to another file system",
    }
    fix = fixes.get(exc.errno)
    return None if fix is None else OutputError(f"{path}: {fix} ({exc.strerror})")


def environment_error_in(exc: BaseException, writing: str | None = None) -> OutputError | None:
    """`environment_error` of an OSError anywhere in `exc`'s chain, or of a library error that
    only carries the OS's number in its text (polars and deltalake say "(os error 28)")."""
    import os
    import re

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno is not None:
            return environment_error(cur, writing)
        m = re.search(r"os error (\d+)", str(cur))
        if m:
            code = int(m.group(1))
            return environment_error(OSError(code, os.strerror(code)), writing)
        cur = cur.__cause__ or cur.__context__
    return None


class PublishedWeekError(RotationDLError):
    """A week already in the score history would be published with a different result."""
