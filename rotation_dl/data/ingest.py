"""Ingest raw bar files into the canonical store: validate, normalise, partition, commit.

Streams: each file is first scanned for its trading dates, then read and validated a few days at
a time (`chunk_rows` rows of whole days), so peak memory depends on the chunk, not on the length
of history. A parquet file of at most `chunk_rows` rows is read whole in one step and profiled
from that read (its dates alone come first, from its footer when it holds one day); when any
check fails, the whole-input checks run over every file first, so refusals keep their counts
and their order. Staged writes run on a background thread, overlapping the next chunk. A file
already ingested with the same settings, unchanged since (size and modification time, recorded
in `<store>/_sources.json`), is skipped without being read. Every
chunk is staged under `<store>/.staging-<pid>-<id>/`; only when all inputs have passed is the
whole ingest committed to the store's Delta table, as one version under the writer lock
(`store.commit_partitions`); any error removes the staging area, leaving the store as it was,
and a killed ingest's staging area is removed by the next one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from rotation_dl.artifacts import atomic_write_bytes
from rotation_dl.data.calendar import non_trading_days
from rotation_dl.data.limits import LimitTally
from rotation_dl.data.profile import (
    FileProfile,
    check_symbols,
    check_trading_days,
    check_units,
    has_amount_column,
    profile_file,
    profile_frame,
    small_file_dates,
)
from rotation_dl.data.readers import (
    ColumnMapping,
    list_files,
    normalize_symbols,
    read_bars_file,
)
from rotation_dl.data.runs import day_starts, symbol_starts
from rotation_dl.data.store import (
    COMPRESSION,
    LOCK,
    MANIFEST,
    Partitioning,
    StoreManifest,
    check_compatible,
    commit_partitions,
    committed_records,
    partition_name,
    read_manifest,
    remove_stale_staging,
    staging_dir,
    store_version,
)
from rotation_dl.data.validate import IngestPolicy, validate_bars
from rotation_dl.errors import (
    BarSizeError,
    DataError,
    EmptyInputError,
    RotationDLError,
    UnreadableFileError,
)
from rotation_dl.schema import BAR_SCHEMA, DAILY_SCHEMA
from rotation_dl.session import Session, bar_size_text

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
    notes: list[str] = field(default_factory=list)
    skipped_files: int = 0
    limit_breaks: dict | None = None  # the store's raw moves beyond the daily price limit
    store_version: int | None = None  # the store's version after this ingest

    def summary(self) -> str:
        if self.files and self.skipped_files == self.files:
            return (
                f"{self.files} file(s), all unchanged since the last ingest: nothing read or "
                f"added; store version {self.store_version}"
            )
        size = "daily" if self.frequency == "daily" else bar_size_text(self.bar_minutes)
        dropped = ", ".join(f"{k}={v}" for k, v in self.dropped.items()) or "none"
        notes = "".join(f"; note: {n}" for n in self.notes)
        if self.skipped_files:
            notes += f"; {self.skipped_files} unchanged file(s) skipped"
        lb = self.limit_breaks
        if lb and lb["breaks"]:
            notes += (
                f"; {lb['breaks']} raw move(s) beyond the daily price limit "
                f"({lb['per_10k']:.2f} per 10,000 stock-days; returns across days need "
                "adjusted prices)"
            )
        return (
            f"{self.files} file(s), {self.rows_read:,} rows of {size} bars "
            f"({self.first_date} .. {self.last_date}); added {self.rows_added:,} rows in "
            f"{len(self.partitions_written)} partition(s), {len(self.partitions_unchanged)} "
            f"unchanged; store version {self.store_version}; dropped: {dropped}{notes}"
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


SOURCES = "_sources.json"


# Settings added after stores existed, at their defaults: left out of the key, so upgrading
# does not make every stored file look changed (and be read again) on the next ingest.
LATER_DEFAULTS = (", morning_close_1300=False",)


def settings_key(*settings: object) -> str:
    """Hash of everything besides the file that shapes what ingest stores from it."""
    text = repr(settings)
    for default in LATER_DEFAULTS:
        text = text.replace(default, "")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(path: Path, settings: str) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "settings": settings}


SOURCES_RECORD = "rotation_dl.sources"  # the same record, in each ingest's commit info


VERSION_KEY = "_store_version"  # the store version `_sources.json` is up to date with


def read_sources(root: Path) -> dict:
    """Which file versions the store holds: `_sources.json`, brought up to date by the records
    of commits newer than it (an ingest killed between its commit and `_sources.json` left only
    the commit's record)."""
    p = Path(root) / SOURCES
    try:
        known = json.loads(p.read_text()) if p.is_file() else {}
    except (OSError, ValueError):  # unreadable record: re-read every file
        known = {}
    upto = known.pop(VERSION_KEY, -1)
    for version, text in committed_records(Path(root), SOURCES_RECORD):
        if version > upto:
            try:
                known.update(json.loads(text))
            except ValueError:
                continue
    return known


def write_sources(root: Path, sources: dict, version: int) -> None:
    record = {VERSION_KEY: version, **sources}
    atomic_write_bytes(Path(root) / SOURCES, json.dumps(record, indent=1).encode())


LIMITS = "_limits.json"


def record_limit_breaks(root: Path, tally: LimitTally) -> dict:
    """Record this ingest's count of raw close-to-close moves beyond the daily price limit in
    `<store>/_limits.json` (appended per ingest); stages check the adjusted prices they use."""
    res = tally.result()
    run = {
        "stock_days": res.stock_days,
        "breaks": res.breaks.height,
        "per_10k": res.per_10k,
        "examples": res.examples(5),
    }
    path = Path(root) / LIMITS
    try:
        runs = json.loads(path.read_text())["ingests"] if path.is_file() else []
    except (OSError, ValueError, KeyError):
        runs = []
    record = {"note": "raw closes as stored; stages check the adjusted prices they use",
              "ingests": [*runs, run]}  # fmt: skip
    atomic_write_bytes(path, json.dumps(record, indent=1).encode())
    return run


def daily_closes_of(clean: pl.DataFrame, daily: bool) -> pl.DataFrame:
    """(symbol, date, close, volume) per stock and day, sorted by symbol and date, from a
    validated chunk (sorted by symbol and ts): the last bar's close for intraday bars."""
    day = pl.col("ts").dt.date().alias("date")
    if daily or clean.is_empty():
        return clean.select("symbol", day, "close", "volume")
    first = np.flatnonzero(day_starts(*symbol_starts(clean)))
    last = np.append(first[1:], clean.height) - 1  # runs of one (symbol, day): sorted rows
    volume = np.add.reduceat(clean["volume"].to_numpy(), first)
    return (
        clean[last]
        .select("symbol", day, "close")
        .with_columns(pl.Series("volume", volume, dtype=pl.Float64))
    )


def day_chunks(
    dates: list[date], rows_per_date: dict[date, int], max_rows: int, max_days: int | None
) -> list[list[date]]:
    """Consecutive whole days, at most `max_rows` rows (or one day) and `max_days` days each."""
    chunks: list[list[date]] = []
    cur: list[date] = []
    rows = 0
    for d in dates:
        n = rows_per_date.get(d, 0)
        full = cur and (rows + n > max_rows or (max_days is not None and len(cur) >= max_days))
        if full:
            chunks.append(cur)
            cur, rows = [], 0
        cur.append(d)
        rows += n
    if cur:
        chunks.append(cur)
    return chunks


def partial_count(exc: DataError, chunk_dates: list) -> DataError:
    """The same error, saying its count covers one chunk of days (validation stops at the first
    failing chunk of a big file, so the whole-file count is at least this)."""
    return type(exc)(
        f"{exc.problem} (counted in days {chunk_dates[0]}..{chunk_dates[-1]}, the first "
        "failing chunk; later days may add more)",
        file=exc.file,
        column=exc.column,
        count=exc.count,
        example=exc.example,
        unit=exc.unit,
        at_least=True,
    )


def _to_canonical(df: pl.DataFrame, daily: bool) -> pl.DataFrame:
    if daily:
        return df.with_columns(pl.col("ts").dt.date().alias("date")).select(*DAILY_SCHEMA)
    return df.select(*BAR_SCHEMA)


def _split_partitions(
    df: pl.DataFrame, manifest: StoreManifest, dates: list[date]
) -> list[tuple[str, pl.DataFrame]]:
    """Split a validated chunk (rows on `dates`) into its store partitions; no split when the
    dates make just one."""
    names = {partition_name(d, manifest.partition) for d in dates}
    if df.is_empty():
        return []
    if len(names) == 1:
        return [(names.pop(), df)]
    day = pl.col("ts").dt.date() if manifest.key == "ts" else pl.col("date")
    key = day if manifest.partition == "date" else day.dt.truncate("1mo")
    keyed = df.with_columns(key.alias("_part"))
    groups = keyed.partition_by("_part", as_dict=True, include_key=False)
    return [(partition_name(d, manifest.partition), frag) for (d,), frag in groups.items()]


def staged_fragments(
    staging: Path,
    file_index: int,
    chunk_index: int,
    canon: pl.DataFrame,
    manifest: StoreManifest,
    dates: list[date],
) -> list[tuple[Path, pl.DataFrame]]:
    """Where each store partition of a checked chunk is staged:
    `<staging>/<partition>/<file index>-<chunk index>.parquet` (the commit names a clash's
    source files from the file index)."""
    return [
        (staging / name / f"{file_index:05d}-{chunk_index:06d}.parquet", frag)
        for name, frag in _split_partitions(canon, manifest, dates)
    ]


@dataclass
class CheckedChunk:
    """A chunk validated and shaped for the store."""

    canon: pl.DataFrame  # validated rows in the store's schema
    closes: pl.DataFrame | None  # daily closes for the limit tally (None: not asked for)
    bar_minutes: int
    dropped: dict[str, int]


def check_chunk(
    raw: pl.DataFrame,
    file: str,
    mapping: ColumnMapping,
    session: Session,
    policy: IngestPolicy,
    bar_minutes: int | None,
    known: pl.Series | None,
    closes: bool,
) -> CheckedChunk:
    """Normalise the symbols of a chunk read from `file` (`known`: its distinct codes, when
    already found), validate it against `bar_minutes` and put it in the store's schema, with
    its daily closes when `closes`. Raises the DataError validation finds."""
    raw = normalize_symbols(raw, mapping.symbol_format, known)
    clean, size, dropped = validate_bars(raw, file, session, policy, mapping.ts_label, bar_minutes)
    daily = daily_closes_of(clean, size == 0) if closes and clean.height else None
    return CheckedChunk(_to_canonical(clean, size == 0), daily, size, dropped)


class StagingWriter:
    """Writes staged fragments on one background thread, so a chunk's write overlaps the next
    chunk's read and validation (polars writes without holding the GIL). At most one batch
    waits, so memory stays at about two chunks; a write's error surfaces at the next
    `submit` or `wait`."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-write")
        self._pending: Future | None = None

    @staticmethod
    def _write(frames: list[tuple[Path, pl.DataFrame]]) -> None:
        for out, frame in frames:
            out.parent.mkdir(parents=True, exist_ok=True)
            frame.write_parquet(out, compression=COMPRESSION, statistics=True)

    def submit(self, frames: list[tuple[Path, pl.DataFrame]]) -> None:
        self.wait()
        self._pending = self._pool.submit(self._write, frames)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Let a running write finish (its error, if any, is dropped: one is already raised)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            wait([pending])
        self._pool.shutdown(wait=True)


@dataclass
class PreparedFile:
    """A file read whole and checked on a worker thread: its profile, and (when it has rows
    on trading days) the validated canonical rows or the validation error, which is raised only
    after the whole-input checks of that file have passed, as in a serial ingest."""

    profile: FileProfile
    rows: int  # rows read
    non_trading_rows: int  # rows on days that cannot be trading days (dropped)
    dates: list[date]  # its trading dates
    chunk: CheckedChunk | None = None  # None: no rows on trading days, or an error
    error: DataError | None = None


def prepare_small_file(
    path: Path,
    mapping: ColumnMapping,
    timezone: str,
    dates: list[date],
    skip: set[date],
    session: Session,
    policy: IngestPolicy,
    bar_minutes: int | None,
    closes: bool,
) -> PreparedFile:
    """Read a file of at most `chunk_rows` rows whole, profile it from that read, drop its
    rows on `skip` days, then validate it against `bar_minutes` (the size earlier input set).
    Pure: safe on a worker thread."""
    whole = _collect(read_bars_file(path, mapping, timezone=timezone), str(path))
    prof = profile_frame(path, whole, has_amount_column(path, mapping), dates)
    rows, n_skip = whole.height, 0
    if skip:
        on_skip = pl.col("ts").dt.date().is_in(list(skip))
        n_skip = whole.select(on_skip.sum()).item()
        if n_skip:
            whole = whole.filter(~on_skip)
    kept = [d for d in prof.dates if d not in skip]
    out = PreparedFile(prof, rows, n_skip, kept)
    if not kept:
        return out
    known = None if skip else prof.symbols
    try:
        out.chunk = check_chunk(
            whole, str(path), mapping, session, policy, bar_minutes, known, closes
        )
    except DataError as exc:
        out.error = exc
    return out


class Lookahead:
    """`prepare(path, bar_minutes)` for the files to come, in order, on `workers` threads
    while the caller handles the current one (polars and numpy work without the GIL). Until
    the bar size is known only one file is in flight, as each file is checked against the
    size earlier files set. An error is raised when its file is taken, so files fail in
    order, exactly as in a serial ingest."""

    def __init__(
        self,
        prepare: Callable[[Path, int | None], PreparedFile],
        paths: list[Path],
        workers: int = 2,
    ) -> None:
        self._prepare = prepare
        self._todo = list(reversed(paths))
        self._queue: list[tuple[Path, Future]] = []
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest-read")

    def take(self, path: Path, bar_minutes: int | None) -> PreparedFile:
        depth = self._workers + 1 if bar_minutes is not None else 1
        while self._todo and len(self._queue) < depth:
            nxt = self._todo.pop()
            self._queue.append((nxt, self._pool.submit(self._prepare, nxt, bar_minutes)))
        queued, future = self._queue.pop(0)
        if queued != path:  # the caller takes the files in the order given
            raise RuntimeError(f"lookahead out of order: {queued} != {path}")
        return future.result()

    def close(self) -> None:
        """Drop what has not started; let running work finish (its result is not needed)."""
        for _, future in self._queue:
            future.cancel()
        self._queue.clear()
        self._pool.shutdown(wait=True)


def _manifest_for(
    bar_minutes: int,
    partition: Partitioning | None,
    existing: StoreManifest | None,
    root: Path,
) -> StoreManifest:
    """The store's manifest from the first validated chunk (checked against the store's)."""
    frequency = "daily" if bar_minutes == 0 else "intraday"
    part = partition or (existing.partition if existing else None)
    part = part or ("date" if frequency == "intraday" else "month")
    manifest = StoreManifest(frequency, bar_minutes, part)
    check_compatible(existing, manifest, root)
    return manifest


def ingest_bars(
    inputs: str | Path | Sequence[str | Path],
    store: str | Path,
    mapping: ColumnMapping | None = None,
    *,
    session: Session,
    timezone: str = "Asia/Shanghai",
    calendar: str | None = None,
    partition: Partitioning | None = None,
    chunk_rows: int = 2_000_000,
    chunk_days: int | None = None,
    policy: IngestPolicy | None = None,
    today: date | None = None,
    check_limits: bool = True,
    bar_size: int | None = None,
    lock_timeout_s: float = 600.0,
    units_unchecked: Sequence[str] = (),
) -> IngestReport:
    """Validate raw bar files and add them to the store at `store` (created if missing).

    Args:
        inputs: files or directories of parquet/CSV bars.
        store: store root.
        mapping: how the source columns map onto the canonical schema.
        session: trading session for bar-time checks.
        timezone: the market's zone: zoned timestamps are converted to it, naive ones are
            taken as local.
        calendar: exchange calendar code (e.g. XSHG) for holidays; None checks weekends and
            future dates only.
        partition: `date` or `month` (default: the store's, else `date` for intraday and `month`
            for daily bars).
        chunk_rows: rows validated per step (whole days, at least one day): bounds peak memory
            whatever the bar size, with few passes over big files.
        chunk_days: optional cap on the days in one step.
        policy: handling of recoverable problems.
        today: the date after which bars are refused (default: today in `timezone`).
        check_limits: count the store's close-to-close moves beyond the A-share daily price
            limits after the commit and record them in `<store>/_limits.json` (off for
            markets without limits).
        bar_size: the input's bar size in minutes, 0 for daily bars (None: detected; one
            bar per symbol and day is daily).
        lock_timeout_s: how long to wait for another ingest holding the store's writer
            lock before failing with StoreLockedError.
        units_unchecked: glob patterns of files whose amount / volume units are taken as
            they are (the units check would refuse them; noted in the report).

    Returns:
        An IngestReport; raises a DataError subclass (nothing written) on bad input.
    """
    mapping = mapping or ColumnMapping()
    policy = policy or IngestPolicy()
    root = Path(store)
    paths = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    files = [f for p in paths for f in list_files(p, "bar")]
    existing = read_manifest(root)
    bar_minutes = existing.bar_minutes if existing else bar_size
    if existing is not None and bar_size is not None and bar_size != existing.bar_minutes:
        size = bar_size_text(bar_size)
        held = bar_size_text(existing.bar_minutes)
        raise BarSizeError(
            f"data.bar_size says {size} bars but the store holds {held} bars; use another store",
            file=str(root),
        )
    report = IngestReport(files=len(files))
    settings = settings_key(mapping, session, timezone, calendar, policy, partition)
    known = read_sources(root)
    fresh = [f for f in files if known.get(str(f.resolve())) != fingerprint(f, settings)]
    report.skipped_files = len(files) - len(fresh)
    if not fresh:
        log.info("ingest %s: every input unchanged since the last ingest; nothing to do", root)
        for stale in remove_stale_staging(root):  # left by an ingest killed after its commit
            log.info("removed %s, the staging area of an interrupted ingest", stale)
        if existing is not None:
            report.frequency, report.bar_minutes = existing.frequency, existing.bar_minutes
            report.store_version = store_version(root)
        return report
    files = fresh
    # files read whole in one step are profiled from that read (no pass of their own); only
    # their dates are needed first, for the calendar (a file per day: from its footer)
    small = {}
    if chunk_days is None:
        for f in files:
            found = small_file_dates(f, mapping, timezone, chunk_rows)
            if found is not None:
                small[f] = found
    profiles = {f: profile_file(f, mapping, timezone) for f in files if f not in small}

    def check_every_file() -> None:
        """The whole-input checks over every file, as if all were profiled first: raises
        what they find, with counts over all files (only called once something failed)."""
        every = [profiles.get(f) or profile_file(f, mapping, timezone) for f in files]
        check_symbols(every, mapping)
        check_units(every, mapping, units_unchecked)
        check_trading_days(every, calendar, timezone, policy.on_non_trading_day, today)

    try:
        check_symbols(list(profiles.values()), mapping)
        check_units(list(profiles.values()), mapping, units_unchecked)
    except DataError:
        if small:
            check_every_file()  # counts over every file
        raise
    file_dates = {d for p in profiles.values() for d in p.rows_per_date}
    file_dates |= {d for found in small.values() for d in found}
    skip = non_trading_days(file_dates, calendar, timezone, today)
    if skip and policy.on_non_trading_day == "fail":
        check_every_file()  # raises NonTradingDayError, counted over every file
    if skip:
        rows = sum(n for p in profiles.values() for d, n in p.rows_per_date.items() if d in skip)
        report.dropped["non_trading_day_rows"] += rows
        report.rows_read += rows
    created = [d for d in (root, *root.parents) if not d.exists()]  # removed again if unused
    root.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_staging(root):  # left by an ingest that was killed
        log.info("removed %s, the staging area of an interrupted ingest", stale)
    staging = staging_dir(root)
    writer = StagingWriter()
    skip_days = set(skip)

    def prepare(path: Path, size: int | None) -> PreparedFile:
        return prepare_small_file(
            path, mapping, timezone, small[path], skip_days, session, policy, size, check_limits
        )

    manifest: StoreManifest | None = None  # from the first checked chunk
    tally = LimitTally(sorted(file_dates - skip_days)) if check_limits else None

    def stage(fi: int, ci: int, checked: CheckedChunk, dates: list[date]) -> None:
        """Count a checked chunk into the report and the limit tally; stage its partitions."""
        nonlocal manifest
        report.dropped.update(checked.dropped)
        if tally is not None and checked.closes is not None:
            tally.add(checked.closes)
        manifest = manifest or _manifest_for(checked.bar_minutes, partition, existing, root)
        writer.submit(staged_fragments(staging, fi, ci, checked.canon, manifest, dates))

    ahead = Lookahead(prepare, [f for f in files if f in small])
    try:
        all_dates: set = set()
        small_profiles: list[FileProfile] = []
        placed: set[str] = set()  # source codes already checked
        for fi, path in enumerate(files):
            if path in small:  # read whole and validated ahead, on the worker threads
                prep = ahead.take(path, bar_minutes)
                prof = prep.profile
                codes = set(prof.symbols.to_list())
                if codes - placed:  # codes no earlier file had
                    check_symbols([prof], mapping)
                    placed |= codes
                check_units([prof], mapping, units_unchecked)
                small_profiles.append(prof)
                report.rows_read += prep.rows
                if prep.non_trading_rows:
                    report.dropped["non_trading_day_rows"] += prep.non_trading_rows
                all_dates.update(prep.dates)
                if prep.error is not None:
                    raise prep.error
                if prep.chunk is None:
                    continue
                bar_minutes = prep.chunk.bar_minutes
                stage(fi, 0, prep.chunk, prep.dates)
                continue
            lf = read_bars_file(path, mapping, timezone=timezone)
            prof = profiles[path]
            dates = [d for d in prof.dates if d not in skip]
            all_dates.update(dates)
            for ci, chunk_dates in enumerate(
                day_chunks(dates, prof.rows_per_date, chunk_rows, chunk_days)
            ):
                whole = len(chunk_dates) == len(prof.rows_per_date)  # the file in one chunk
                part = lf if whole else lf.filter(pl.col("ts").dt.date().is_in(chunk_dates))
                raw = _collect(part, str(path))
                report.rows_read += raw.height
                try:
                    checked = check_chunk(
                        raw, str(path), mapping, session, policy, bar_minutes, None, check_limits
                    )
                except DataError as exc:
                    if len(dates) <= len(chunk_dates) or exc.count is None:
                        raise
                    raise partial_count(exc, chunk_dates) from exc
                bar_minutes = checked.bar_minutes
                stage(fi, ci, checked, chunk_dates)
        writer.wait()
        if manifest is None:
            raise EmptyInputError("no valid rows in the input", file=str(paths[0]), count=0)
        report.notes += check_units(
            [*profiles.values(), *small_profiles], mapping, units_unchecked, final=True
        )
        seen = {str(f.resolve()): fingerprint(f, settings) for f in files}
        result = commit_partitions(
            root,
            staging,
            manifest,
            policy.on_conflict == "replace",
            sources=[str(f) for f in files],
            lock_timeout_s=lock_timeout_s,
            record={SOURCES_RECORD: json.dumps(seen)},
        )
        # re-read: another ingest's too
        write_sources(root, {**read_sources(root), **seen}, result.version)
        report.store_version = result.version
        if tally is not None:
            report.limit_breaks = record_limit_breaks(root, tally)
        report.frequency = manifest.frequency
        report.bar_minutes = manifest.bar_minutes
        report.rows_added = result.rows_added
        report.partitions_written = result.written
        report.partitions_unchanged = result.unchanged
        report.first_date = str(min(all_dates))
        report.last_date = str(max(all_dates))
    except DataError:
        if small:  # what the whole-input checks find over every file is said first
            check_every_file()
        raise
    finally:
        ahead.close()
        writer.close()  # no write is still running when its folder goes
        shutil.rmtree(staging, ignore_errors=True)
        if not (root / MANIFEST).exists():  # a failed first ingest: not even its lock file
            (root / LOCK).unlink(missing_ok=True)
        for d in created:  # deepest first: a failed first ingest leaves no empty folders
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    log.info("ingest %s: %s", root, report.summary())
    return report
