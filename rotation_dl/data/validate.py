"""Validation of raw bars: one pure check per rule, each raising a typed error.

Checks run on an eager chunk (a few days of one file) so memory stays flat however long the
history is; `validate_bars` runs them in order and returns the cleaned chunk, its detected bar
size (minutes; 0 for daily bars) and the counts of rows dropped under a `drop` policy.
"""

from __future__ import annotations

import logging
from datetime import time
from dataclasses import dataclass
from typing import Literal

import polars as pl

from rotation_dl.errors import (
    BarSizeError,
    DuplicateRowsError,
    SessionError,
    UnsortedInputError,
    ValueRangeError,
)
from rotation_dl.schema import PRICE_COLS
from rotation_dl.session import Session

log = logging.getLogger(__name__)

Policy = Literal["fail", "drop"]
VALUE_COLS = (*PRICE_COLS, "volume", "amount")


@dataclass(frozen=True)
class IngestPolicy:
    """What to do with recoverable problems.

    Args:
        on_zero_price_bars: rows with open=high=low=close=0 and no volume, a feed's way of saying
            "no trade": `drop` (treat as missing, the default) or `fail`.
        on_unsorted: rows of a symbol out of time order: `fail` (default) or `sort`.
        on_conflict: rows already in the store with other values: `fail` (default) or `replace`.
        ohlc_tolerance: relative slack for high >= close/open >= low checks (float32 sources).
    """

    on_zero_price_bars: Policy = "drop"
    on_unsorted: Literal["fail", "sort"] = "fail"
    on_conflict: Literal["fail", "replace"] = "fail"
    ohlc_tolerance: float = 1e-6


def _example(df: pl.DataFrame, mask: pl.Expr) -> tuple[int, dict | None]:
    bad = df.filter(mask)
    if bad.height == 0:
        return 0, None
    row = bad.drop([c for c in ("_row", "_file") if c in bad.columns]).row(0, named=True)
    if "_row" in bad.columns:
        row = {"row": bad["_row"][0], **row}
    return bad.height, row


def _raise_if(
    df: pl.DataFrame, mask: pl.Expr, err: type, problem: str, file: str, column: str
) -> None:
    n, ex = _example(df, mask)
    if n:
        raise err(problem, file=file, column=column, count=n, example=ex)


def check_missing_values(df: pl.DataFrame, file: str) -> None:
    """Null symbol/ts or null/NaN/inf numbers."""
    for col in ("symbol", "ts"):
        _raise_if(df, pl.col(col).is_null(), ValueRangeError, "are missing a value", file, col)
    for col in VALUE_COLS:
        _raise_if(
            df,
            pl.col(col).is_null() | ~pl.col(col).is_finite(),
            ValueRangeError,
            "are null, NaN or infinite",
            file,
            col,
        )


def drop_zero_price_bars(df: pl.DataFrame, file: str, policy: Policy) -> tuple[pl.DataFrame, int]:
    """Rows with all prices 0 and no volume mean "no trade": drop them or fail."""
    mask = pl.all_horizontal([pl.col(c) == 0 for c in PRICE_COLS]) & (pl.col("volume") == 0)
    if policy == "fail":
        _raise_if(
            df, mask, ValueRangeError,
            "are zero-price no-trade bars (set on_zero_price_bars=drop to treat them as missing)",
            file, "close",
        )
        return df, 0
    n = df.select(mask.sum()).item()
    return (df.filter(~mask), n) if n else (df, 0)


def check_value_ranges(df: pl.DataFrame, file: str, tolerance: float) -> None:
    """Positive prices, non-negative volume/amount, and low <= open, close <= high."""
    for col in PRICE_COLS:
        _raise_if(df, pl.col(col) <= 0, ValueRangeError, "have a non-positive price", file, col)
    for col in ("volume", "amount"):
        _raise_if(df, pl.col(col) < 0, ValueRangeError, "are negative", file, col)
    slack = pl.col("high") * tolerance
    _raise_if(
        df, pl.col("high") < pl.col("low") - slack, ValueRangeError,
        "have high < low", file, "high",
    )
    for col in ("open", "close"):
        _raise_if(
            df,
            (pl.col(col) > pl.col("high") + slack) | (pl.col(col) < pl.col("low") - slack),
            ValueRangeError,
            "lie outside [low, high]",
            file,
            col,
        )


def check_duplicates(df: pl.DataFrame, file: str) -> None:
    """Each (symbol, ts) at most once."""
    _raise_if(
        df, pl.struct("symbol", "ts").is_duplicated(), DuplicateRowsError,
        "duplicate another row's (symbol, ts)", file, "ts",
    )


def check_sorted(df: pl.DataFrame, file: str, policy: Literal["fail", "sort"]) -> pl.DataFrame:
    """Within a symbol, rows must come in increasing time (file order kept in `_row`)."""
    order = df.sort("_row") if "_row" in df.columns else df
    mask = pl.col("ts").diff().over("symbol") < pl.duration(microseconds=0)
    n, ex = _example(order, mask)
    if n and policy == "fail":
        raise UnsortedInputError(
            "come before an earlier bar of the same symbol (unsorted; set on_unsorted=sort)",
            file=file, column="ts", count=n, example=ex,
        )
    if n:
        log.warning("%s: %d rows out of time order; sorted", file, n)
    return df


def is_daily(df: pl.DataFrame) -> bool:
    """True when every timestamp sits at the same time of day (date-only stamps)."""
    times = df.select(pl.col("ts").dt.time().n_unique()).item()
    return times == 1 and df.select(pl.col("ts").dt.time().first()).item() == time(0, 0)


def detect_bar_minutes(df: pl.DataFrame, file: str) -> int:
    """Modal gap between consecutive bars of a symbol within a day; raises on mixed sizes."""
    gaps = (
        df.select("symbol", "ts")
        .sort("symbol", "ts")
        .with_columns(
            ((pl.col("ts").diff().dt.total_minutes()).over("symbol", pl.col("ts").dt.date()))
            .alias("gap")
        )
        .filter(pl.col("gap") > 0)
    )
    if gaps.is_empty():
        raise BarSizeError(
            "cannot detect the bar size: no symbol has two bars on one day",
            file=file, column="ts", count=df.height,
        )
    bar = int(gaps["gap"].mode().min())
    per_symbol = (
        gaps.group_by("symbol")
        .agg(pl.col("gap").mode().min().alias("mode"), pl.len().alias("n"))
        .filter((pl.col("mode") != bar) & (pl.col("n") >= 3))
    )
    if per_symbol.height:
        ex = per_symbol.row(0, named=True)
        raise BarSizeError(
            f"mixed bar sizes: most bars are {bar} min apart but {per_symbol.height} symbol(s) "
            f"use another size",
            file=file, column="ts", count=per_symbol.height,
            example={"symbol": ex["symbol"], "bar_minutes": ex["mode"]},
        )
    return bar


def check_session(df: pl.DataFrame, file: str, session: Session, bar_minutes: int) -> None:
    """Bar-end times inside the session and on the `bar_minutes` grid."""
    clock = session.clock(pl.col("ts"))
    _raise_if(
        df, clock.is_null(), SessionError,
        f"have bar-end times outside the trading session {_fmt_session(session)}", file, "ts",
    )
    off_grid = (clock % bar_minutes != 0) & (clock != session.length)
    _raise_if(
        df, off_grid, BarSizeError,
        f"are off the {bar_minutes}-minute bar grid (mixed bar sizes or bad stamps)", file, "ts",
    )


def _fmt_session(session: Session) -> str:
    return ", ".join(f"{o // 60:02d}:{o % 60:02d}-{c // 60:02d}:{c % 60:02d}"
                     for o, c in session.intervals)


def validate_bars(
    df: pl.DataFrame,
    file: str,
    session: Session,
    policy: IngestPolicy,
    ts_label: Literal["end", "start"] = "end",
    bar_minutes: int | None = None,
) -> tuple[pl.DataFrame, int, dict[str, int]]:
    """Run every check on one chunk; returns (clean chunk, bar minutes or 0 if daily, drops)."""
    dropped: dict[str, int] = {}
    check_missing_values(df, file)
    df, n = drop_zero_price_bars(df, file, policy.on_zero_price_bars)
    if n:
        dropped["zero_price_bars"] = n
    check_value_ranges(df, file, policy.ohlc_tolerance)
    if df.is_empty():
        return df, bar_minutes or 0, dropped
    if bar_minutes == 0 or (bar_minutes is None and is_daily(df)):
        size = 0
    else:
        size = detect_bar_minutes(df, file)
        if bar_minutes is not None and size != bar_minutes:
            raise BarSizeError(
                f"has {size}-minute bars but earlier input/store has {bar_minutes}-minute bars",
                file=file, column="ts", count=df.height,
            )
        if ts_label == "start":
            df = df.with_columns(pl.col("ts") + pl.duration(minutes=size))
        check_session(df, file, session, size)
    check_duplicates(df, file)
    df = check_sorted(df, file, policy.on_unsorted)
    return df, size, dropped
