"""The canonical bar store: validated bars as parquet, partitioned by date (or month).

Layout::

    <root>/_manifest.json                 frequency, bar size, partitioning, schema version
    <root>/bars/date=2025-01-02/data.parquet    (or month=2025-01/ for partition="month")

Every file is written to a temporary name and renamed into place, so readers never see a partial
file. `commit_partitions` merges new rows into existing partitions: identical rows are skipped
(re-running an ingest adds nothing), new rows are added, and rows whose values differ from the
stored ones are refused unless the policy says `replace`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import polars as pl

from rotation_dl.artifacts import COMPRESSION, atomic_write_bytes, atomic_write_parquet
from rotation_dl.errors import BarSizeError, DuplicateRowsError, StoreError

__all__ = ["atomic_write_bytes", "atomic_write_parquet"]  # re-exported for existing callers

MANIFEST = "_manifest.json"
SCHEMA_VERSION = 1
Partitioning = Literal["date", "month"]


@dataclass(frozen=True)
class StoreManifest:
    """What a store holds; checked on every write and read."""

    frequency: Literal["intraday", "daily"]
    bar_minutes: int  # 0 for daily
    partition: Partitioning
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return "ts" if self.frequency == "intraday" else "date"


def read_manifest(root: Path) -> StoreManifest | None:
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    return StoreManifest(**json.loads(path.read_text()))


def write_manifest(root: Path, manifest: StoreManifest) -> None:
    atomic_write_bytes(Path(root) / MANIFEST, json.dumps(asdict(manifest), indent=2).encode())


def check_compatible(existing: StoreManifest | None, new: StoreManifest, root: Path) -> None:
    """Refuse to mix frequencies, bar sizes or partitionings in one store."""
    if existing is None:
        return
    if (existing.frequency, existing.bar_minutes) != (new.frequency, new.bar_minutes):
        raise BarSizeError(
            f"store holds {existing.frequency} bars of {existing.bar_minutes} min, input has "
            f"{new.frequency} bars of {new.bar_minutes} min; use another store",
            file=str(root),
        )
    if existing.partition != new.partition:
        raise StoreError(
            f"{root}: store is partitioned by {existing.partition}, not {new.partition}"
        )


def partition_name(d: date, partition: Partitioning) -> str:
    return f"date={d.isoformat()}" if partition == "date" else f"month={d:%Y-%m}"


def partition_span(name: str) -> tuple[date, date]:
    """First and last calendar date a partition (`date=YYYY-MM-DD` or `month=YYYY-MM`) covers."""
    value = name.split("=", 1)[1]
    if len(value) == 10:
        d = date.fromisoformat(value)
        return d, d
    first = date.fromisoformat(value + "-01")
    nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return first, date.fromordinal(nxt.toordinal() - 1)


def partition_path(root: Path, name: str) -> Path:
    return Path(root) / "bars" / name / "data.parquet"


def stored_partitions(root: Path) -> list[str]:
    bars = Path(root) / "bars"
    if not bars.exists():
        return []
    return sorted(p.parent.name for p in bars.glob("*/data.parquet"))


def _merge_partition(
    new: pl.DataFrame, existing: pl.DataFrame | None, key: str, replace: bool, where: str
) -> pl.DataFrame | None:
    """Merged partition, or None when `new` adds nothing to `existing`.

    `new` may hold a `_file` column naming each row's source, used in error messages.
    """
    keys = ["symbol", key]
    values = [c for c in new.columns if c not in keys and not c.startswith("_")]
    if existing is not None:  # a partition written before a column existed: it is null there
        existing = existing.with_columns(
            pl.lit(None, new.schema[c]).alias(c) for c in values if c not in existing.columns
        ).select(keys + values)
    new = new.sort(keys)
    same_key = pl.all_horizontal([pl.col(k) == pl.col(k).shift(1) for k in keys])
    same_vals = pl.all_horizontal([pl.col(v).eq_missing(pl.col(v).shift(1)) for v in values])
    flags = new.select(same_key.fill_null(False).alias("k"), same_vals.fill_null(False).alias("v"))
    clash = new.filter(flags["k"] & ~flags["v"])
    if clash.height:
        files = (
            sorted(
                set(
                    new.filter(flags["k"] | flags["k"].shift(-1).fill_null(False))[
                        "_file"
                    ].to_list()
                )
            )
            if "_file" in new.columns
            else []
        )
        raise DuplicateRowsError(
            f"appear in several input files with different values ({', '.join(files)})",
            file=where,
            column=key,
            count=clash.height,
            example=clash.drop([c for c in clash.columns if c.startswith("_")]).row(0, named=True),
        )
    new = new.filter(~flags["k"]).drop([c for c in new.columns if c.startswith("_")])
    if existing is None:
        return new
    joined = new.join(existing, on=keys, how="left", suffix="__old")
    is_new = pl.col(f"{values[0]}__old").is_null()
    differs = pl.any_horizontal([pl.col(v).ne_missing(pl.col(f"{v}__old")) for v in values])
    changed = joined.filter(~is_new & differs)
    added = joined.filter(is_new).select(new.columns)
    if changed.height and not replace:
        raise StoreError(
            f"{where}: {changed.height} rows differ from the stored ones (set "
            "on_conflict=replace to overwrite); e.g. "
            f"{changed.select(new.columns).row(0, named=True)}"
        )
    if added.height == 0 and changed.height == 0:
        return None
    if changed.height:
        existing = existing.join(changed.select(keys), on=keys, how="anti")
        added = pl.concat([added, changed.select(new.columns)])
    return pl.concat([existing, added]).sort(keys)


@dataclass
class CommitResult:
    written: list[str]
    unchanged: list[str]
    rows_added: int


def commit_partitions(
    root: Path,
    staging: Path,
    manifest: StoreManifest,
    replace: bool = False,
    sources: list[str] | None = None,
) -> CommitResult:
    """Merge staged fragments (<staging>/<partition>/<file index>-<chunk>.parquet) into the store.

    Two phases keep a failure from leaving a half-updated store: first every partition is made
    ready inside `staging` (all conflicts surface here), then each is renamed into place. A
    partition with one fragment and nothing stored is renamed as is, without a re-read.
    """
    root = Path(root)
    ready: list[tuple[Path, Path]] = []
    unchanged: list[str] = []
    rows_added = 0
    for part_dir in sorted(p for p in staging.iterdir() if p.is_dir()):
        frags = sorted(part_dir.glob("*.parquet"))
        final = partition_path(root, part_dir.name)
        if len(frags) == 1 and not final.exists():
            rows_added += pl.scan_parquet(frags[0]).select(pl.len()).collect().item()
            ready.append((frags[0], final))
            continue
        new = pl.concat(
            [
                pl.read_parquet(f).with_columns(
                    pl.lit(sources[int(f.stem.split("-")[0])] if sources else f.name).alias(
                        "_file"
                    )
                )
                for f in frags
            ]
        )
        existing = pl.read_parquet(final) if final.exists() else None
        merged = _merge_partition(new, existing, manifest.key, replace, str(final))
        if merged is None:
            unchanged.append(part_dir.name)
            continue
        rows_added += merged.height - (existing.height if existing is not None else 0)
        out = part_dir / "merged.ready"
        merged.write_parquet(out, compression=COMPRESSION, statistics=True)
        ready.append((out, final))
    for src, dst in ready:
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    write_manifest(root, manifest)
    return CommitResult([d.parent.name for _, d in ready], unchanged, rows_added)


def partitions_between(root: Path, start: date | None, end: date | None) -> list[str]:
    """Stored partitions overlapping [start, end] (None: unbounded), in date order."""
    out = []
    for name in stored_partitions(root):
        lo, hi = partition_span(name)
        if (start is None or hi >= start) and (end is None or lo <= end):
            out.append(name)
    return out


def scan_store(
    root: str | Path,
    start: date | None = None,
    end: date | None = None,
    symbols: Iterable[str] | None = None,
) -> pl.LazyFrame:
    """Lazily scan the store, reading only partitions that overlap [start, end]."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        raise StoreError(
            f"{root}: not a rotation_dl store (no {MANIFEST}); run `rotation-dl ingest`"
        )
    files = [partition_path(root, n) for n in partitions_between(root, start, end)]
    if not files:
        raise StoreError(f"{root}: no stored bars between {start} and {end}")
    lf = pl.scan_parquet(files)
    key = pl.col(manifest.key)
    day = key.dt.date() if manifest.key == "ts" else key
    if start is not None:
        lf = lf.filter(day >= start)
    if end is not None:
        lf = lf.filter(day <= end)
    if symbols is not None:
        lf = lf.filter(pl.col("symbol").is_in(list(symbols)))
    return lf


def store_has_pre_close(root: str | Path) -> bool:
    """Whether a daily store carries the exchange's previous close (adjustment factors)."""
    lf = scan_store(root)
    return "pre_close" in lf.collect_schema() and bool(
        lf.select(pl.col("pre_close").is_not_null().any()).collect().item()
    )
