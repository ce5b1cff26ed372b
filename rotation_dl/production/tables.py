"""Append-only Delta tables: each append is one atomic commit, and every earlier version stays
readable (`history`), so a kill leaves the table as it was before or after, never between."""

from __future__ import annotations

from pathlib import Path

import polars as pl


def exists(path: Path) -> bool:
    return (path / "_delta_log").is_dir() and any((path / "_delta_log").glob("*.json"))


def read(path: Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The table's rows (an empty frame of `schema` when it has none yet)."""
    if not exists(path):
        return pl.DataFrame(schema=schema)
    return pl.read_delta(str(path)).select(list(schema)).cast(schema)  # type: ignore[arg-type]


def append(path: Path, rows: pl.DataFrame) -> None:
    """Append `rows` in one commit (the table is created by the first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.write_delta(str(path), mode="append")


def version(path: Path) -> int | None:
    """The table's current version (None before the first commit)."""
    if not exists(path):
        return None
    from deltalake import DeltaTable

    return DeltaTable(str(path)).version()
