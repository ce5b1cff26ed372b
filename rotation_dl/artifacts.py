"""Atomic artifact writes: every file goes to a temporary name in its folder and is renamed into
place, so a reader (or a killed run) never sees a half-written file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

COMPRESSION = "lz4"  # fast to write and read; artifacts are working copies, not archives


def temp_name(path: Path) -> Path:
    """A temporary name beside `path` carrying this process's pid (`.name.<pid>-<uuid>.tmp`),
    after sweeping the ones that dead processes left for the same file."""
    sweep_stale_temps(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")


LEGACY_TEMP_AGE_S = 24 * 3600  # a temporary without a pid (older releases) counts as stale after


def sweep_stale_temps(path: Path) -> list[Path]:
    """Remove the temporaries of `path` that a killed writer left: those whose pid is gone
    (and pid-less ones of older releases after a day); a live writer's are kept."""
    removed = []
    if not path.parent.is_dir():
        return removed
    for f in path.parent.glob(f".{path.name}.*.tmp"):
        tag = f.name[len(path.name) + 2 : -4]  # "<pid>-<uuid>" or "<uuid>"
        pid, sep, _ = tag.partition("-")
        if sep and pid.isdigit():
            stale = not process_alive(int(pid))
        else:
            try:
                stale = time.time() - f.stat().st_mtime > LEGACY_TEMP_AGE_S
            except FileNotFoundError:
                continue
        if stale:
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def folder_lock(
    root: Path, name: str, timeout_s: float, refuse: Callable[[str], Exception]
) -> Iterator[None]:
    """Hold the OS file lock `root/name` (released when the process dies, so a killed holder
    never blocks anyone). A second holder waits up to `timeout_s`, then `refuse(holder)` is
    raised, `holder` naming the process that has it."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / name, "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.seek(0)
                    raise refuse(fh.read().strip() or "another process") from None
                time.sleep(0.1)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_dir_for(target: Path) -> Path:
    """A fresh temporary folder name beside `target`, carrying this process's pid so that
    `remove_stale_temp_dirs` can tell a dead run's leftovers from a live one's."""
    return target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def remove_stale_temp_dirs(target: Path) -> list[Path]:
    """Remove the `temp_dir_for` folders beside `target` (of any name: a changed input gives
    a new one) whose process died, i.e. the leftovers of killed builds."""
    import re
    import shutil

    removed = []
    for d in target.parent.glob(".*.tmp"):
        m = re.fullmatch(r"\..+\.(\d+)-[0-9a-f]{8}\.tmp", d.name)
        if m and d.is_dir() and not process_alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


PROVENANCE_KEY = "rotation_dl.provenance"  # parquet key-value metadata: what a file was built from


def atomic_write_parquet(
    df: pl.DataFrame, path: Path, provenance: dict[str, Any] | None = None
) -> None:
    """Write a parquet file atomically (temp file + rename); `provenance` (e.g. the store
    version it was built from) goes into the file's key-value metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    meta = {PROVENANCE_KEY: json.dumps(provenance, default=str)} if provenance else None
    try:
        df.write_parquet(tmp, compression=COMPRESSION, statistics=True, metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_provenance(path: Path) -> dict[str, Any]:
    """The provenance a parquet file was written with ({} when none)."""
    meta = pl.read_parquet_metadata(path)
    return json.loads(meta[PROVENANCE_KEY]) if PROVENANCE_KEY in meta else {}


def write_json(obj: Any, path: Path) -> Path:
    """JSON (indented; dates and paths as strings), atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=str).encode())
    return path


def write_table(df: pl.DataFrame, path: Path, csv: bool = True) -> None:
    """`path` (parquet) and, with `csv`, the same table beside it as CSV (list columns joined
    with commas), both atomically."""
    atomic_write_parquet(df, path)
    if csv:
        flat = df.with_columns(
            [pl.col(c).list.join(",") for c, t in df.schema.items() if isinstance(t, pl.List)]
        )
        atomic_write_bytes(path.with_suffix(".csv"), flat.write_csv().encode())
