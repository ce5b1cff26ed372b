"""Store -> industry bars, streamed by date chunks (the build behind `rotation-dl industry-bars`
and production scoring), and the bar size of industry bars. Each chunk is aggregated by the
numpy kernel (`industry_kernel`) while the next one is read on a background thread."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal, TypeVar

import polars as pl

from rotation_dl.artifacts import atomic_write_parquet
from rotation_dl.data.limits import LimitTally, enforce_adjusted
from rotation_dl.data.readers import read_adjustment, read_classification, read_daily_closes
from rotation_dl.data.resample import resample_bars
from rotation_dl.data.store import (
    StoreManifest,
    partition_span,
    partitions_between,
    read_manifest,
    resolve_version,
    scan_store,
    store_has_pre_close,
    store_provenance,
)
from rotation_dl.errors import ConfigError, StoreError
from rotation_dl.industry.aggregate import (
    Weighting,
    add_vwap_gap,
    adjust_bars,
    factors_from_adjusted_daily,
)
from rotation_dl.industry.daily import factors_from_pre_close
from rotation_dl.industry.kernel import industry_chunk
from rotation_dl.schema import BAR_SCHEMA
from rotation_dl.session import Session, bar_size_text

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BuildCarry:
    """What a streamed build carries from one chunk to the next: each stock's last (adjusted)
    close, each industry's index level, the adjusted-close factor state and the industries
    seen. Handed to a build that starts the next day, it continues the series exactly as one
    pass would (`industry.incremental`)."""

    close: pl.DataFrame | None
    level: pl.DataFrame | None
    factor: pl.DataFrame | None
    industries: tuple[str, ...]


@dataclass
class IndustryBarsResult:
    path: Path | None
    frame: pl.DataFrame
    bar_minutes: int
    store_version: int | None = None  # the store version it was built from
    carry: BuildCarry | None = None  # the state after the last day built

    def summary(self) -> str:
        f = self.frame
        days = f["date"].n_unique()
        active = f.filter(pl.col("n_active") > 0)
        return (
            f"{f['industry'].n_unique()} industries x {days} days x "
            f"{f.height // max(1, days * f['industry'].n_unique())} bars/day "
            f"({bar_size_text(self.bar_minutes)}), {f.height:,} rows; mean active constituents "
            f"per bar {active['n_active'].mean():.1f}; bars with no trading constituent: "
            f"{f.height - active.height}; from store version {self.store_version}"
        )


def open_for_build(
    store: str | Path, bar_minutes: int | None, store_version: int | None
) -> tuple[StoreManifest, int | None]:
    """The store's manifest and the one version a build reads (every chunk the same), with a
    minute size refused for a daily store."""
    manifest = read_manifest(Path(store))
    if manifest is None:
        raise StoreError(f"{store}: not a rotation_dl store; run `rotation-dl ingest` first")
    if manifest.frequency == "daily" and bar_minutes:
        raise ConfigError(
            f"industry.bar_minutes={bar_minutes}: this store holds daily bars, which cannot be "
            "cut into minute bars; leave it null"
        )
    return manifest, resolve_version(store, store_version)


def as_bars(lf: pl.LazyFrame, daily: bool) -> pl.LazyFrame:
    """Store rows in BAR_SCHEMA: daily rows get `ts` = their date at midnight (the daily
    convention of industry bars)."""
    if daily:
        lf = lf.with_columns(pl.col("date").cast(pl.Datetime("us")).alias("ts"))
    return lf.select(list(BAR_SCHEMA))


def pre_close_factors(
    store: str | Path, end: date | None, version: int | None
) -> pl.DataFrame | None:
    """Adjustment factors from a daily store's `pre_close` column (None when it has none)."""
    if not store_has_pre_close(store, version):
        return None
    rows = scan_store(store, None, end, version=version)
    return factors_from_pre_close(rows.select("symbol", "date", "close", "pre_close").collect())


def _chunks(names: list[str], size: int) -> list[list[str]]:
    return [names[i : i + size] for i in range(0, len(names), size)]


def prefetched(read: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """`read(item)` for each item in order, the next one read on a background thread while
    the caller works on the current one (polars reads without holding the GIL)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        pending: Future | None = None
        for item in items:
            nxt = pool.submit(read, item)
            if pending is not None:
                yield pending.result()
            pending = nxt
        if pending is not None:
            yield pending.result()


def build_industry_bars(
    store: str | Path,
    classification: str | Path,
    output: str | Path | None,
    *,
    classification_columns: Mapping[str, str] | None = None,
    adjustment: str | Path | None = None,
    adjustment_columns: Mapping[str, str] | None = None,
    adjusted_daily: str | Path | None = None,
    adjusted_daily_columns: Mapping[str, str] | None = None,
    weighting: Weighting = "equal",
    bar_minutes: int | None = None,
    on_unmapped: Literal["fail", "drop"] = "fail",
    on_missing_industry: Literal["fail", "drop"] = "fail",
    session: Session,
    chunk_partitions: int = 5,
    start: date | None = None,
    end: date | None = None,
    factor_tolerance: float = 0.005,
    max_limit_breaks_per_10k: float | None = None,
    on_unadjusted: Literal["fail", "warn"] = "fail",
    store_version: int | None = None,
    carry: BuildCarry | None = None,
) -> IndustryBarsResult:
    """Store + classification (+ adjustment) -> industry bars parquet at `output` (atomic).

    Intraday stores give industry bars of their bar size (or `bar_minutes`); daily stores give
    one industry bar a day, stamped at midnight. Streams the store `chunk_partitions`
    partitions at a time, carrying each stock's last
    (adjusted) close and each industry's index level into the next chunk, so memory stays flat
    as history grows and the result equals a single pass over all of it. `start`/`end` limit the
    dates read; `output=None` skips writing. `carry` (a previous build's, ending the day before
    `start`) continues that build: the bars equal those of one build over both spans.
    """
    manifest, version = open_for_build(store, bar_minutes, store_version)
    daily = manifest.frequency == "daily"
    size = manifest.bar_minutes
    cls = read_classification(
        classification, columns=classification_columns, on_missing_industry=on_missing_industry
    )
    factors: pl.DataFrame | None = None
    closes: pl.DataFrame | None = None
    if adjustment is not None:
        factors = read_adjustment(adjustment, columns=adjustment_columns)
    elif adjusted_daily is not None:  # factors come from each chunk's own raw closes below
        closes = read_daily_closes(
            adjusted_daily, columns=adjusted_daily_columns, start=start, end=end
        )
    elif daily:  # vendor daily files: factors from the exchange's pre_close, if any
        factors = pre_close_factors(store, end, version)
    names = partitions_between(Path(store), start, end, version)
    if not names:
        raise StoreError(f"{store}: no stored bars between {start} and {end}")
    carry_close = carry.close if carry else None
    carry_factor = carry.factor if carry else None
    carry_level = carry.level if carry else None
    tally = LimitTally() if max_limit_breaks_per_10k is not None else None
    parts: list[pl.DataFrame] = []
    industries: set[str] = set(carry.industries) if carry else set()

    def read_chunk(chunk: list[str]) -> tuple[date, pl.DataFrame]:
        lo, hi = partition_span(chunk[0])[0], partition_span(chunk[-1])[1]
        lo, hi = max(lo, start or lo), min(hi, end or hi)
        return hi, as_bars(scan_store(store, lo, hi, version=version), daily).collect()

    for hi, frame in prefetched(read_chunk, _chunks(names, chunk_partitions)):
        bars = frame.lazy()  # one read of the chunk
        if closes is not None:
            factors = factors_from_adjusted_daily(
                bars, closes, factor_tolerance, carry=carry_factor
            ).collect()
            ends = factors.group_by("symbol").agg(pl.col("r", "factor").sort_by("date").last())
            carry_factor = (
                ends
                if carry_factor is None
                else pl.concat([carry_factor.join(ends, on="symbol", how="anti"), ends])
            )
        if bar_minutes and bar_minutes != manifest.bar_minutes:
            bars = resample_bars(bars, bar_minutes, session, source_minutes=manifest.bar_minutes)
            size = bar_minutes
        bars = add_vwap_gap(bars)
        if factors is not None:
            bars = adjust_bars(bars, factors.filter(pl.col("date") <= hi).lazy())
        if tally is not None:  # are the closes behind cross-day returns adjusted?
            tally.add(
                bars.group_by("symbol", pl.col("ts").dt.date().alias("date"))
                .agg(pl.col("close").sort_by("ts").last(), pl.col("volume").sum())
                .sort("symbol", "date")
                .collect()
            )
        chunk_result = industry_chunk(
            bars.collect(),
            cls,
            industries,
            weighting=weighting,
            on_unmapped=on_unmapped,
            source=str(classification),
            prev_close=carry_close,
            start_level=carry_level,
        )
        if chunk_result is None:
            continue
        industries.update(chunk_result.industries)
        part = chunk_result.bars
        parts.append(part)
        last = chunk_result.last_close
        carry_close = (
            last
            if carry_close is None
            else pl.concat([carry_close.join(last, on="symbol", how="anti"), last])
        )
        levels = part.group_by("industry").agg(pl.col("close").sort_by("ts").last().alias("level"))
        carry_level = (  # an industry without bars in this chunk keeps its level
            levels
            if carry_level is None
            else pl.concat([carry_level.join(levels, on="industry", how="anti"), levels])
        )
    if not parts:
        raise StoreError(f"{store}: no bars to aggregate")
    if tally is not None:  # before anything is written
        source = str(adjusted_daily or adjustment or store)
        enforce_adjusted(tally.result(), source, max_limit_breaks_per_10k, on_unadjusted)
    frame = _complete_grid(pl.concat(parts), sorted(industries))
    if start is not None or end is not None:
        frame = frame.filter(pl.col("date").is_between(start or date.min, end or date.max))
    out = Path(output) if output is not None else None
    if out is not None:
        atomic_write_parquet(frame, out, store_provenance(store, version))
    state = BuildCarry(carry_close, carry_level, carry_factor, tuple(sorted(industries)))
    return IndustryBarsResult(out, frame, size, version, state)


def _complete_grid(frame: pl.DataFrame, industries: list[str]) -> pl.DataFrame:
    """Add rows for industries first seen in a later chunk (flat index, n_active = 0)."""
    expected = len(industries) * frame["ts"].n_unique()
    if frame.height == expected:
        return frame.sort("industry", "ts")
    grid = pl.DataFrame({"industry": industries}).join(
        frame.select(pl.col("ts").unique()), how="cross"
    )
    full = grid.join(frame, on=["industry", "ts"], how="left").sort("industry", "ts")
    level = pl.col("close").forward_fill().over("industry").fill_null(1.0)
    return full.with_columns(
        pl.col("n_active").fill_null(0),
        pl.col("volume").fill_null(0.0),
        pl.col("amount").fill_null(0.0),
        pl.col("ts").dt.date().alias("date"),
        *[pl.col(c).fill_null(level) for c in ("open", "high", "low", "close")],
    ).select(frame.columns)


def infer_bar_minutes(industry_bars: pl.DataFrame | pl.LazyFrame) -> int:
    """Bar size of industry bars: the smallest gap between bars of one day (0 if daily)."""
    gaps = (
        industry_bars.lazy()
        .select("industry", "ts")
        .sort("industry", "ts")
        .select(
            (pl.col("ts").diff().dt.total_minutes())
            .over("industry", pl.col("ts").dt.date())
            .alias("g")
        )
        .filter(pl.col("g") > 0)
        .select(pl.col("g").min())
        .collect()
        .item()
    )
    return int(gaps) if gaps is not None else 0
