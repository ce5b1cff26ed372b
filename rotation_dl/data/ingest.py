"""Ingest raw bar files into the canonical store: validate, normalise, partition, commit.

Streams: each file is first scanned for its trading dates, then read and validated a few days at
a time (`chunk_days`), so peak memory depends on the chunk, not on the length of history. Every
chunk is staged under `<store>/.staging-<id>/`; only when all inputs have passed is anything
moved into the store, and any error removes the staging area, leaving the store as it was.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from rotation_dl.data.readers import (
    ColumnMapping,
    list_files,
    normalize_symbols,
    read_bars_file,
    unplaceable_symbols,
)
from rotation_dl.data.store import (
    COMPRESSION,
    Partitioning,
    StoreManifest,
    check_compatible,
    commit_partitions,
    partition_name,
    read_manifest,
)
from rotation_dl.data.validate import IngestPolicy, validate_bars
from rotation_dl.errors import (
    EmptyInputError,
    RotationDLError,
    SymbolFormatError,
    UnreadableFileError,
)
from rotation_dl.schema import BAR_SCHEMA, DAILY_SCHEMA
from rotation_dl.session import Session

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What an ingest run did."""

    files: int = 0
    rows_read: int = 0
    rows_added: int = 0
    dropped: Counter = field(default_factory=Counter)
    frequency: str = ""
    bar_minutes: int = 0
    partitions_written: list[str] = field(default_factory=list)
    partitions_unchanged: list[str] = field(default_factory=list)
    first_date: str | None = None
    last_date: str | None = None

    def summary(self) -> str:
        size = "daily" if self.frequency == "daily" else f"{self.bar_minutes}-min"
        dropped = ", ".join(f"{k}={v}" for k, v in self.dropped.items()) or "none"
        return (
            f"{self.files} file(s), {self.rows_read:,} rows of {size} bars "
            f"({self.first_date} .. {self.last_date}); added {self.rows_added:,} rows in "
            f"{len(self.partitions_written)} partition(s), {len(self.partitions_unchanged)} "
            f"unchanged; dropped: {dropped}"
        )


def _collect(lf: pl.LazyFrame, file: str) -> pl.DataFrame:
    try:
        return lf.collect()
    except RotationDLError:
        raise
    except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError, OSError) as exc:
        raise UnreadableFileError(
            f"cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", file=file
        ) from exc


def _file_dates(lf: pl.LazyFrame, file: str) -> list:
    dates = _collect(lf.select(pl.col("ts").dt.date().unique().sort().alias("d")), file)["d"]
    if dates.len() == 0:
        raise EmptyInputError("has no rows", file=file, count=0)
    return dates.to_list()


def check_symbols(files: Sequence[Path], mapping: ColumnMapping) -> None:
    """Refuse, before anything is stored, source codes the symbol format cannot place (counted
    over every input file)."""
    if mapping.symbol_format != "ashare":
        return
    bad: dict[str, str] = {}
    for path in files:
        codes = _collect(
            read_bars_file(path, mapping).select(pl.col("symbol").unique()), str(path)
        )
        for code in unplaceable_symbols(codes["symbol"]):
            bad.setdefault(code, str(path))
    if bad:
        first = next(iter(bad.values()))
        raise SymbolFormatError(
            "cannot be placed on an A-share exchange (SH/SZ/BJ); set "
            "data.mapping.symbol_format=keep for other markets",
            file=first if len(set(bad.values())) == 1 else f"{first} and other files",
            column=mapping.source("symbol"),
            count=len(bad),
            example=sorted(bad)[:5],
            unit="symbol",
        )


def _to_canonical(df: pl.DataFrame, daily: bool) -> pl.DataFrame:
    if daily:
        return df.with_columns(pl.col("ts").dt.date().alias("date")).select(*DAILY_SCHEMA)
    return df.select(*BAR_SCHEMA)


def _split_partitions(df: pl.DataFrame, manifest: StoreManifest) -> list[tuple[str, pl.DataFrame]]:
    """Split a validated chunk into its store partitions (no split when it is just one)."""
    day = pl.col("ts").dt.date() if manifest.key == "ts" else pl.col("date")
    key = day if manifest.partition == "date" else day.dt.truncate("1mo")
    keyed = df.with_columns(key.alias("_part"))
    groups = keyed.partition_by("_part", as_dict=True, include_key=False)
    return [(partition_name(d, manifest.partition), frag) for (d,), frag in groups.items()]


def ingest_bars(
    inputs: str | Path | Sequence[str | Path],
    store: str | Path,
    mapping: ColumnMapping | None = None,
    *,
    session: Session,
    partition: Partitioning | None = None,
    chunk_days: int = 10,
    policy: IngestPolicy | None = None,
) -> IngestReport:
    """Validate raw bar files and add them to the store at `store` (created if missing).

    Args:
        inputs: files or directories of parquet/CSV bars.
        store: store root.
        mapping: how the source columns map onto the canonical schema.
        session: trading session for bar-time checks.
        partition: `date` or `month` (default: the store's, else `date` for intraday and `month`
            for daily bars).
        chunk_days: trading days validated per step (memory vs. passes over big files).
        policy: handling of recoverable problems.

    Returns:
        An IngestReport; raises a DataError subclass (nothing written) on bad input.
    """
    mapping = mapping or ColumnMapping()
    policy = policy or IngestPolicy()
    root = Path(store)
    paths = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    files = [f for p in paths for f in list_files(p, "bar")]
    existing = read_manifest(root)
    bar_minutes = existing.bar_minutes if existing else None
    report = IngestReport(files=len(files))
    check_symbols(files, mapping)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{uuid.uuid4().hex[:12]}"
    try:
        manifest: StoreManifest | None = None
        all_dates: set = set()
        for fi, path in enumerate(files):
            lf = read_bars_file(path, mapping)
            dates = _file_dates(lf, str(path))
            all_dates.update(dates)
            for ci in range(0, len(dates), chunk_days):
                chunk_dates = dates[ci : ci + chunk_days]
                raw = _collect(lf.filter(pl.col("ts").dt.date().is_in(chunk_dates)), str(path))
                raw = normalize_symbols(raw, mapping.symbol_format)
                report.rows_read += raw.height
                clean, bar_minutes, dropped = validate_bars(
                    raw, str(path), session, policy, mapping.ts_label, bar_minutes
                )
                report.dropped.update(dropped)
                if manifest is None:
                    frequency = "daily" if bar_minutes == 0 else "intraday"
                    part = partition or (existing.partition if existing else None)
                    part = part or ("date" if frequency == "intraday" else "month")
                    manifest = StoreManifest(frequency, bar_minutes, part)
                    check_compatible(existing, manifest, root)
                canon = _to_canonical(clean, manifest.frequency == "daily")
                for name, frag in _split_partitions(canon, manifest):
                    out = staging / name / f"{fi:05d}-{ci:06d}.parquet"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    frag.write_parquet(out, compression=COMPRESSION, statistics=True)
        if manifest is None:
            raise EmptyInputError("no valid rows in the input", file=str(paths[0]), count=0)
        result = commit_partitions(
            root,
            staging,
            manifest,
            policy.on_conflict == "replace",
            sources=[str(f) for f in files],
        )
        report.frequency = manifest.frequency
        report.bar_minutes = manifest.bar_minutes
        report.rows_added = result.rows_added
        report.partitions_written = result.written
        report.partitions_unchanged = result.unchanged
        report.first_date = str(min(all_dates))
        report.last_date = str(max(all_dates))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if existing is None and not any(root.iterdir()):
            root.rmdir()
    log.info("ingest %s: %s", root, report.summary())
    return report
