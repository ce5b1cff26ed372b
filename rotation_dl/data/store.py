"""The canonical bar store: a Delta Lake table of validated bars, partitioned by date (or month).

Layout::

    <root>/_manifest.json                       frequency, bar size, partitioning, schema version
    <root>/table/_delta_log/00000000000000000001.json    one commit per version
    <root>/table/part=2025-01-02/<uuid>.parquet          (part=2025-01 for month partitions)
    <root>/_writer.lock                         held by the one writer committing at a time

**One ingest is one commit.** Validated fragments are staged beside the table; the commit moves
each new partition's file into the table (or writes the merged partition when rows already
exist there) and then records every added and replaced file in a single Delta log entry. A
reader lists the files of one version from the log, so a kill at any moment leaves the previous
version whole and readable (files of an unfinished commit are never listed), and any past version
can be read again (`version=N`, time travel). Writers take `_writer.lock` for the whole
read-merge-commit step, so a second ingest waits and then merges onto the first one's version:
no row is lost or duplicated. Merging keeps today's rules: identical rows are skipped (re-running
an ingest adds nothing), new rows are added, and rows whose values differ from the stored ones
are refused unless the policy says `replace`.

A store in the pre-Delta layout (parquet files under `<root>/bars/`) is refused with a message
naming `rotation-dl store-upgrade`, which converts it (`upgrade_store`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import polars as pl

from rotation_dl.artifacts import (
    COMPRESSION,
    atomic_write_bytes,
    atomic_write_parquet,
    folder_lock,
    process_alive,
)
from rotation_dl.errors import BarSizeError, DuplicateRowsError, StoreError, StoreLockedError

log = logging.getLogger(__name__)

__all__ = ["atomic_write_bytes", "atomic_write_parquet"]  # re-exported for existing callers

MANIFEST = "_manifest.json"
TABLE = "table"
LOCK = "_writer.lock"
SCHEMA_VERSION = 2  # 1: parquet partitions under bars/ (before the Delta table)
PART = "part"  # the table's partition column: "2025-01-02" (date) or "2025-01" (month)
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


def _old_layout_error(root: Path) -> StoreError:
    return StoreError(
        f"{root}: a store in the old layout (parquet partitions under bars/, before the Delta "
        f"table); convert it with `rotation-dl store-upgrade paths.store={root}` or ingest "
        "into a new store"
    )


def read_manifest(root: Path) -> StoreManifest | None:
    """The store's manifest (None: no store here); an old-layout store is refused."""
    path = Path(root) / MANIFEST
    if not path.exists():
        if (Path(root) / "bars").is_dir():
            raise _old_layout_error(Path(root))
        return None
    manifest = StoreManifest(**json.loads(path.read_text()))
    if manifest.schema_version < SCHEMA_VERSION:
        raise _old_layout_error(Path(root))
    return manifest


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


def _name_of(value: str) -> str:
    """Partition name (`date=...`/`month=...`) of a `part` value."""
    return f"date={value}" if len(value) == 10 else f"month={value}"


def table_path(root: Path | str) -> Path:
    return Path(root) / TABLE


# ---- reading a version ----
def _table(root: Path | str, version: int | None):
    from deltalake import DeltaTable

    path = table_path(root)
    if not (path / "_delta_log").is_dir():
        orphans = sorted(path.glob("part=*/*.parquet")) if path.is_dir() else []
        if orphans:  # data without the log that says which files are committed
            raise StoreError(
                f"{root}: the store's log ({path / '_delta_log'}) is missing while "
                f"{len(orphans)} data file(s) are there, so no version can be read: restore "
                "_delta_log from a backup, or ingest again into a new store (paths.store)"
            )
        return None
    try:
        return DeltaTable(str(path), version=version)
    except Exception as exc:  # a version the log does not have, a damaged log
        if version is not None:
            raise StoreError(
                f"{root}: no store version {version} (data.store_version); the store is at "
                f"version {store_version(root)}"
            ) from exc
        raise StoreError(f"{root}: the store's table cannot be read ({exc})") from exc


def store_version(root: Path | str) -> int | None:
    """The store's latest committed version (None: no table yet)."""
    table = _table(root, None)
    return None if table is None else int(table.version())


def _files(root: Path | str, version: int | None = None) -> list[tuple[str, Path, int]]:
    """(partition name, file, rows) of every data file of `version` (latest: None), in
    partition order. Remembered per log state (every commit adds a file to the log folder),
    so a command that asks several times replays the log once."""
    log = table_path(root) / "_delta_log"
    try:
        names = os.listdir(log)
    except OSError:
        return _read_files(root, version)
    key = (str(log.resolve()), version, len(names), max(names, default=""))
    if key not in _FILES:
        if len(_FILES) >= 8:
            _FILES.pop(next(iter(_FILES)))
        _FILES[key] = _read_files(root, version)
    return list(_FILES[key])


_FILES: dict[tuple, list[tuple[str, Path, int]]] = {}


def _read_files(root: Path | str, version: int | None) -> list[tuple[str, Path, int]]:
    table = _table(root, version)
    if table is None:
        return []
    # polars reads the Arrow table directly (pyarrow.table() would import pandas: seconds)
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    base = table_path(root)
    rows = sorted(
        actions.select("path", f"partition.{PART}", "num_records").iter_rows(),
        key=lambda r: (r[1], r[0]),
    )
    return [(_name_of(part), base / path, int(n or 0)) for path, part, n in rows]


def stored_partitions(root: Path, version: int | None = None) -> list[str]:
    """Partition names of `version` (latest: None) in date order."""
    return sorted({name for name, _, _ in _files(root, version)})


def _overlaps(name: str, start: date | None, end: date | None) -> bool:
    lo, hi = partition_span(name)
    return (start is None or hi >= start) and (end is None or lo <= end)


def partitions_between(
    root: Path, start: date | None, end: date | None, version: int | None = None
) -> list[str]:
    """Stored partitions overlapping [start, end] (None: unbounded), in date order."""
    return [n for n in stored_partitions(root, version) if _overlaps(n, start, end)]


def scan_store(
    root: str | Path,
    start: date | None = None,
    end: date | None = None,
    symbols: Iterable[str] | None = None,
    version: int | None = None,
) -> pl.LazyFrame:
    """Lazily scan one version of the store (latest: None), reading only the files of
    partitions that overlap [start, end]."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        raise StoreError(
            f"{root}: not a rotation_dl store (no {MANIFEST}); run `rotation-dl ingest`"
        )
    files = [f for name, f, _ in _files(root, version) if _overlaps(name, start, end)]
    if not files:
        raise StoreError(f"{root}: no stored bars between {start} and {end}")
    refuse_missing_files(root, files, version)
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


def refuse_missing_files(root: Path, files: Sequence[Path], version: int | None) -> None:
    """StoreError naming the data files a version lists but the disk lacks (deleted by hand,
    a partial restore), with what to do, instead of a reader's FileNotFoundError."""
    gone = [f for f in files if not f.exists()]
    if gone:
        v = store_version(root) if version is None else version
        raise StoreError(
            f"{root}: {len(gone)} data file(s) of store version {v} are missing, e.g. "
            f"{gone[0].relative_to(root)}: restore them from a backup, or read a version "
            "before they were added (data.store_version=N; `rotation-dl store-check` lists "
            "what each needs)"
        )


def check_store(root: Path | str, version: int | None = None) -> dict:
    """What `store-check` reports: the version, its partitions, files and rows; StoreError
    when the manifest, the log or any listed data file is missing."""
    root = Path(root)
    if read_manifest(root) is None:
        raise StoreError(f"{root}: not a rotation_dl store (no {MANIFEST})")
    files = _files(root, version)  # raises for a missing or damaged log
    if not files:
        raise StoreError(f"{root}: the store holds no committed bars")
    refuse_missing_files(root, [f for _, f, _ in files], version)
    return {
        "store": str(root),
        "version": store_version(root) if version is None else version,
        "partitions": len({name for name, _, _ in files}),
        "files": len(files),
        "rows": sum(n for _, _, n in files),
        "first": files[0][0],
        "last": files[-1][0],
    }


def resolve_version(root: Path | str, version: int | None) -> int | None:
    """`version` checked against the log (time travel), or the latest one when None."""
    if version is None:
        return store_version(root)
    _table(root, version)  # raises StoreError naming the versions there are
    return version


def store_provenance(root: Path | str, version: int | None) -> dict:
    """What an artifact built from the store records: its path and version."""
    return {"store": str(Path(root).resolve()), "store_version": version}


def store_rows(root: Path | str, version: int | None = None) -> int:
    """Rows in one version of the store (from the log: no data file is read)."""
    return sum(n for _, _, n in _files(root, version))


def store_has_pre_close(root: str | Path, version: int | None = None) -> bool:
    """Whether a daily store carries the exchange's previous close (adjustment factors)."""
    lf = scan_store(root, version=version)
    return "pre_close" in lf.collect_schema() and bool(
        lf.select(pl.col("pre_close").is_not_null().any()).collect().item()
    )


# ---- writing ----
def writer_lock(root: Path, timeout_s: float = 600.0) -> contextlib.AbstractContextManager:
    """Hold the store's writer lock (an OS file lock, released when the process dies): a second
    writer waits up to `timeout_s`, then fails with StoreLockedError."""

    def refuse(holder: str) -> StoreLockedError:
        return StoreLockedError(
            f"{root}: another ingest ({holder}) has been writing for more than "
            f"{timeout_s:.0f} s; re-run when it has finished"
        )

    return folder_lock(root, LOCK, timeout_s, refuse)


def staging_dir(root: Path) -> Path:
    """A fresh staging folder for this process (its pid in the name, for the cleanup)."""
    return Path(root) / f".staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_stale_staging(root: Path) -> list[Path]:
    """Remove staging folders of ingests that died (their pid is gone); returns them."""
    removed = []
    for d in Path(root).glob(".staging-*"):
        pid = d.name.split("-")[1]
        if not pid.isdigit() or not process_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


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
    version: int | None  # the store version after the commit (unchanged: the one before)


def _ensure_table(root: Path, schema) -> None:
    """Create the (empty) table, version 0, on the first commit."""
    import pyarrow as pa
    from deltalake import DeltaTable

    if (table_path(root) / "_delta_log").is_dir():
        return
    full = pa.schema([*schema, pa.field(PART, pa.string())])
    DeltaTable.create(str(table_path(root)), full, partition_by=[PART], mode="ignore")


def referenced_files(root: Path) -> set[str]:
    """Every data file (relative to the table) that any committed version lists: the adds of
    every log entry (and of any checkpoint the log keeps). Time travel reads all of them."""
    from urllib.parse import unquote

    log = table_path(root) / "_delta_log"
    refs: set[str] = set()
    for entry in sorted(log.glob("*.json")):
        for line in entry.read_text().splitlines():
            action = json.loads(line) if line.strip() else {}
            if "add" in action:
                refs.add(unquote(action["add"]["path"]))
    for cp in log.glob("*.checkpoint*.parquet"):
        adds = pl.read_parquet(cp, columns=["add"])["add"].struct.field("path").drop_nulls()
        refs.update(unquote(p) for p in adds.to_list())
    return refs


def remove_orphans(root: Path) -> list[Path]:
    """Delete the data files in the table that no committed version lists (moved in by a
    commit that was killed before its log entry); never a listed one. Call it holding the
    writer lock, so no commit is between its moves and its log entry."""
    base = table_path(root)
    if not (base / "_delta_log").is_dir():
        return []
    refs = referenced_files(root)
    orphans = [f for f in base.glob("part=*/*") if f.is_file()
               and f.relative_to(base).as_posix() not in refs]  # fmt: skip
    for f in orphans:
        f.unlink(missing_ok=True)
    return orphans


def vacuum_store(root: Path, lock_timeout_s: float = 600.0) -> list[Path]:
    """`store-vacuum`: remove orphaned data files and stale staging under the writer lock."""
    with writer_lock(Path(root), lock_timeout_s):
        return remove_orphans(Path(root)) + remove_stale_staging(Path(root))


def _add_action(root: Path, rel: str, value: str, rows: int):
    from deltalake.transaction import AddAction

    st = (table_path(root) / rel).stat()
    return AddAction(
        rel,
        st.st_size,
        {PART: value},
        int(st.st_mtime * 1000),
        True,
        json.dumps({"numRecords": rows}),
    )


def commit_partitions(
    root: Path,
    staging: Path,
    manifest: StoreManifest,
    replace: bool = False,
    sources: list[str] | None = None,
    lock_timeout_s: float = 600.0,
    before_commit=None,
    record: dict[str, str] | None = None,
) -> CommitResult:
    """Merge staged fragments (<staging>/<partition>/<file index>-<chunk>.parquet) into the
    store as one Delta commit, under the writer lock.

    Every partition is made ready inside `staging` first (all conflicts surface there, before
    the table is touched; a partition with one fragment and nothing stored is used as is, the
    others are merged with the stored rows of the version the lock holder sees); then the ready
    files move into the table and one log entry adds them and removes the replaced ones.
    `before_commit` (tests: fault injection) runs just before that entry is written; `record`
    (string keys and values) goes into the entry's commit info, atomically with the data.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import CommitProperties, DeltaTable
    from deltalake.transaction import RemoveAction

    root = Path(root)
    with writer_lock(root, lock_timeout_s):
        orphans = remove_orphans(root)  # a killed commit's files: no version lists them
        if orphans:
            log.info("%s: removed %d orphaned data file(s) of a killed commit", root, len(orphans))
        existing_manifest = read_manifest(root)
        check_compatible(existing_manifest, manifest, root)
        parts = sorted(p for p in staging.iterdir() if p.is_dir())
        stored: dict[str, list[tuple[Path, int]]] = {}
        for name, path, rows in _files(root):
            stored.setdefault(name, []).append((path, rows))
        ready: list[tuple[Path, str, int, list[Path]]] = []  # file, partition, rows, replaced
        unchanged: list[str] = []
        rows_added = 0
        for part_dir in parts:  # phase 1, inside staging: every conflict surfaces here
            name = part_dir.name
            frags = sorted(part_dir.glob("*.parquet"))
            old = stored.get(name, [])
            if len(frags) == 1 and not old:
                rows = pl.scan_parquet(frags[0]).select(pl.len()).collect().item()
                ready.append((frags[0], name, rows, []))
                rows_added += rows
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
            current = pl.read_parquet([p for p, _ in old]) if old else None
            merged = _merge_partition(new, current, manifest.key, replace, f"{root} {name}")
            if merged is None:
                unchanged.append(name)
                continue
            out = part_dir / "merged.ready"
            merged.write_parquet(out, compression=COMPRESSION, statistics=True)
            ready.append((out, name, merged.height, [p for p, _ in old]))
            rows_added += merged.height - (current.height if current is not None else 0)
        if not ready:
            return CommitResult([], unchanged, 0, store_version(root))
        if existing_manifest is None:
            write_manifest(root, manifest)
        _ensure_table(root, pq.read_schema(ready[0][0]))
        base = table_path(root)
        now = int(time.time() * 1000)
        actions: list = []
        for src, name, rows, replaced in ready:  # phase 2: into the table, then one commit
            value = name.split("=", 1)[1]
            rel = f"{PART}={value}/{uuid.uuid4().hex}.parquet"
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, base / rel)
            actions.append(_add_action(root, rel, value, rows))
            actions += [
                RemoveAction(
                    p.relative_to(base).as_posix(), True, now, p.stat().st_size, {PART: value}
                )
                for p in replaced
            ]
        if before_commit is not None:
            before_commit()
        table = DeltaTable(str(base))
        table.create_write_transaction(
            actions,
            mode="append",
            schema=pa.schema(table.schema()),
            partition_by=[PART],
            commit_properties=CommitProperties(custom_metadata=record) if record else None,
        )
        written = [name for _, name, _, _ in ready]
        return CommitResult(written, unchanged, rows_added, store_version(root))


def committed_records(root: Path, key: str, last: int = 50) -> list[tuple[int, str]]:
    """(version, `record[key]`) of the newest `last` commits that carry one, oldest first."""
    from deltalake import DeltaTable

    base = table_path(Path(root))
    if not (base / "_delta_log").is_dir():
        return []
    try:
        history = DeltaTable(str(base)).history(last)
    except Exception:  # an unreadable log is reported by the readers, not here
        return []
    return sorted((int(h.get("version", 0)), h[key]) for h in history if key in h)


# ---- the pre-Delta layout ----
def upgrade_store(root: Path) -> int:
    """Convert a store in the old layout (parquet partitions under `bars/`) into the Delta
    table, in one commit; the old files stay under `bars.pre-delta/` for the user to delete.
    Returns the rows converted."""
    root = Path(root)
    old = root / "bars"
    man_path = root / MANIFEST
    if not old.is_dir() or not man_path.exists():
        raise StoreError(f"{root}: no store in the old layout here (no bars/ and {MANIFEST})")
    meta = json.loads(man_path.read_text())
    manifest = StoreManifest(meta["frequency"], meta["bar_minutes"], meta["partition"])
    staging = staging_dir(root)
    rows = 0
    try:
        for f in sorted(old.glob("*/data.parquet")):
            dest = staging / f.parent.name / "00000-000000.parquet"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
            rows += pl.scan_parquet(f).select(pl.len()).collect().item()
        write_manifest(root, manifest)  # the new schema version: the table is its data
        commit_partitions(root, staging, manifest)
    except BaseException:
        atomic_write_bytes(man_path, json.dumps(meta, indent=2).encode())  # still the old store
        shutil.rmtree(table_path(root), ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    old.rename(root / "bars.pre-delta")
    return rows
