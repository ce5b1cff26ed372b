"""Validation of raw bars: every rule is a boolean expression; one pass counts them all.

Checks run on an eager chunk (a few days of one file), so memory stays flat however long the
history is. The chunk is sorted once by (symbol, ts); duplicates, file-order sortedness and bar
gaps are then plain shifts. Only when a rule's count is non-zero is an example row fetched, and
the first failing rule (in the order listed) raises its typed error naming file, column, count
and example. `validate_bars` returns the clean sorted chunk, its bar size (minutes; 0 for daily
bars) and the counts of rows dropped under a `drop` policy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import time
from typing import Literal

import numpy as np
import polars as pl

from rotation_dl.data.runs import US_PER_DAY, US_PER_MIN, day_starts, symbol_starts
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
        on_non_trading_day: bars on weekends, exchange holidays or after today: `fail`
            (default) or `drop` (counted).
        max_price: prices above it are refused as absurd (a sanity ceiling in the market's
            currency; 1e7 is beyond any listed share or index).
    """

    on_zero_price_bars: Policy = "drop"
    on_unsorted: Literal["fail", "sort"] = "fail"
    on_conflict: Literal["fail", "replace"] = "fail"
    ohlc_tolerance: float = 1e-6
    on_non_trading_day: Literal["fail", "drop"] = "fail"
    max_price: float = 1e7


@dataclass(frozen=True)
class Rule:
    """One validation rule: rows where `mask` is true violate it."""

    name: str
    mask: pl.Expr
    error: type
    problem: str
    column: str


def _first_violation(df: pl.DataFrame, rules: list[Rule], file: str) -> None:
    """Count every rule in one pass; raise the first violated rule's error with an example."""
    if not rules or df.is_empty():
        return
    counts = df.select([r.mask.fill_null(False).sum().alias(r.name) for r in rules]).row(0)
    for rule, n in zip(rules, counts, strict=True):
        if n:
            bad = df.filter(rule.mask.fill_null(False)).head(1)
            row = bad.drop([c for c in bad.columns if c.startswith("_")]).row(0, named=True)
            if "_row" in bad.columns:
                row = {"row": bad["_row"][0], **row}
            raise rule.error(rule.problem, file=file, column=rule.column, count=n, example=row)


def value_rules(tolerance: float, max_price: float = 1e7) -> list[Rule]:
    """Missing, non-finite, non-positive, absurd (above `max_price`, or price x volume beyond
    the float range), negative and OHLC-inconsistent values."""
    rules = [
        Rule(f"null_{c}", pl.col(c).is_null(), ValueRangeError, "are missing a value", c)
        for c in ("symbol", "ts")
    ]
    rules += [
        Rule(
            f"nan_{c}",
            pl.col(c).is_null() | ~pl.col(c).is_finite(),
            ValueRangeError,
            "are null, NaN or infinite",
            c,
        )
        for c in VALUE_COLS
    ]
    rules += [
        Rule(f"nonpos_{c}", pl.col(c) <= 0, ValueRangeError, "have a non-positive price", c)
        for c in PRICE_COLS
    ]
    rules += [
        Rule(
            f"absurd_{c}",
            pl.col(c) > max_price,
            ValueRangeError,
            f"have a price above ingest.policy.max_price={max_price:g} (absurd; raise the "
            "ceiling if it is real)",
            c,
        )
        for c in PRICE_COLS
    ]
    rules += [
        Rule(f"neg_{c}", pl.col(c) < 0, ValueRangeError, "are negative", c)
        for c in ("volume", "amount")
    ]
    rules.append(
        Rule(
            "overflow",
            ~(pl.col("close") * pl.col("volume")).is_finite(),
            ValueRangeError,
            "have close x volume beyond the float range (absurd values)",
            "volume",
        )
    )
    slack = pl.col("high") * tolerance
    rules.append(
        Rule(
            "high_lt_low",
            pl.col("high") < pl.col("low") - slack,
            ValueRangeError,
            "have high < low",
            "high",
        )
    )
    rules += [
        Rule(
            f"{c}_outside",
            (pl.col(c) > pl.col("high") + slack) | (pl.col(c) < pl.col("low") - slack),
            ValueRangeError,
            "lie outside [low, high]",
            c,
        )
        for c in ("open", "close")
    ]
    return rules


ZERO_PRICE_BAR = pl.all_horizontal([pl.col(c) == 0 for c in PRICE_COLS]) & (pl.col("volume") == 0)


def is_daily(df: pl.DataFrame) -> bool:
    """True when every timestamp sits at midnight (date-only stamps)."""
    t = df.select(pl.col("ts").dt.time().min().alias("a"), pl.col("ts").dt.time().max().alias("b"))
    return t.row(0) == (time(0, 0), time(0, 0))


def _with_neighbours(df: pl.DataFrame) -> pl.DataFrame:
    """Sort by (symbol, ts) and add same-symbol flags and gaps to the previous bar."""
    s = df.sort("symbol", "ts")
    same = (pl.col("symbol") == pl.col("symbol").shift(1)).fill_null(False)
    gap = (pl.col("ts") - pl.col("ts").shift(1)).dt.total_minutes()
    same_day = same & (pl.col("ts").dt.date() == pl.col("ts").dt.date().shift(1))
    cols = [same.alias("_same"), pl.when(same_day).then(gap).otherwise(None).alias("_gap")]
    if "_row" in s.columns:
        cols.append((same & (pl.col("_row") < pl.col("_row").shift(1))).alias("_unsorted"))
    return s.with_columns(cols)


def structure_rules(has_row: bool, policy: IngestPolicy) -> list[Rule]:
    rules = [
        Rule(
            "dup",
            pl.col("_same") & (pl.col("ts") == pl.col("ts").shift(1)),
            DuplicateRowsError,
            "repeat the (symbol, ts) of another row",
            "ts",
        )
    ]
    if has_row and policy.on_unsorted == "fail":
        rules.append(
            Rule(
                "unsorted",
                pl.col("_unsorted"),
                UnsortedInputError,
                "come before an earlier bar of the same symbol (unsorted; set on_unsorted=sort)",
                "ts",
            )
        )
    return rules


def detect_bar_minutes(s: pl.DataFrame, file: str) -> int:
    """Modal gap between consecutive bars of a symbol within a day, or 0 (daily) when no symbol
    has two bars on one day; raises on mixed sizes."""
    gaps = s["_gap"].drop_nulls()
    gaps = gaps.filter(gaps > 0)
    if gaps.len() == 0:  # no symbol has two bars on one day: one bar a day is daily data
        return 0
    bar = int(gaps.mode().min())
    per_symbol = (
        s.filter(pl.col("_gap") > 0)
        .group_by("symbol")
        .agg(pl.col("_gap").min().alias("min_gap"), pl.len().alias("n"))
        .filter((pl.col("min_gap") != bar) & (pl.col("n") >= 3))
    )
    if per_symbol.height:
        ex = per_symbol.sort("symbol").row(0, named=True)
        raise BarSizeError(
            f"mixed bar sizes: most bars are {bar} min apart but {per_symbol.height} symbol(s) "
            "use another size",
            file=file,
            column="ts",
            count=per_symbol.height,
            example={"symbol": ex["symbol"], "bar_minutes": ex["min_gap"]},
        )
    return bar


def outside_session_rule(session: Session) -> Rule:
    """Bar-end times the session clock does not know (before the open, in the break, after
    the close)."""
    text = ", ".join(
        f"{o // 60:02d}:{o % 60:02d}-{c // 60:02d}:{c % 60:02d}" for o, c in session.intervals
    )
    return Rule(
        "outside",
        session.clock(pl.col("ts")).is_null(),
        SessionError,
        f"have bar-end times outside the trading session {text}",
        "ts",
    )


def check_session(s: pl.DataFrame, file: str, session: Session, bar_minutes: int) -> None:
    """Bar-end times inside the session and on the `bar_minutes` grid.

    The fast path is one hash lookup of each time of day in the day's valid bar ends; only when
    that finds strays does the session clock tell "outside the session" from "off the grid".
    """
    grid = pl.Series(session.bar_end_times(bar_minutes), dtype=pl.Time)
    stray = ~pl.col("ts").dt.time().is_in(grid.implode())
    if not s.select(stray.any()).item():
        return
    try:
        _check_strays(s, file, session, bar_minutes, stray)
    except (SessionError, BarSizeError) as exc:
        if not morning_close_restamped(s, stray):
            raise
        raise type(exc)(
            exc.problem + f" ({MORNING_CLOSE_HINT})",
            file=exc.file, column=exc.column, count=exc.count, example=exc.example,
            unit=exc.unit, at_least=exc.at_least,
        ) from None  # fmt: skip


MORNING_CLOSE_HINT = (
    "every one is a 13:00 stamp on a day without an 11:30 bar: the morning's last bar, "
    "restamped by the vendor; add data.mapping.morning_close_1300=true"
)


def morning_close_restamped(s: pl.DataFrame, stray: pl.Expr) -> bool:
    """Whether every stray bar-end is 13:00 on a (symbol, day) without an 11:30 bar."""
    t = pl.col("ts").dt.time()
    keys = [pl.col("symbol"), pl.col("ts").dt.date()]
    has_1130 = (t == pl.time(11, 30)).any().over(keys)
    odd = stray & ~((t == pl.time(13, 0)) & ~has_1130)
    return not s.select(odd.any()).item()


def _check_strays(
    s: pl.DataFrame, file: str, session: Session, bar_minutes: int, stray: pl.Expr
) -> None:
    """The first rule the stray bar-ends break: outside the session, or off the grid."""
    grid_text = f"are off the {bar_minutes}-minute bar grid (mixed bar sizes or bad stamps)"
    _first_violation(
        s,
        [
            outside_session_rule(session),
            Rule(
                "off_grid",
                stray,
                BarSizeError,
                grid_text,
                "ts",
            ),
        ],
        file,
    )


def suspended_day_bars(df: pl.DataFrame) -> pl.Series:
    """Bars of (symbol, day)s that are entirely flat with no volume: how clients fill a
    suspension. They are missing bars, not prices (a partly quiet day is kept).

    Only flat zero-volume rows can belong to such a day, so the day-level counts are taken
    over those candidates alone (most chunks have none and cost one pass).
    """
    flat = (pl.col("volume") == 0) & (pl.col("high") == pl.col("low"))
    if df.is_empty() or not df.select(flat.any()).item():
        return pl.Series("s", [False] * df.height, dtype=pl.Boolean)
    day = (pl.col("ts").dt.date() if df.schema["ts"] != pl.Date else pl.col("ts")).alias("_d")
    cand = (
        df.filter(flat)
        .group_by("symbol", day)
        .agg(pl.len().alias("_flat"), pl.col("close").n_unique().alias("_levels"))
    )
    keys = cand.select("symbol", "_d")
    totals = (
        df.select("symbol", day)
        .join(keys, on=["symbol", "_d"], how="semi")
        .group_by("symbol", "_d")
        .agg(pl.len().alias("_all"))
    )
    whole = cand.join(totals, on=["symbol", "_d"]).filter(
        (pl.col("_flat") == pl.col("_all")) & (pl.col("_levels") == 1)
    )
    if whole.is_empty():
        return pl.Series("s", [False] * df.height, dtype=pl.Boolean)
    marked = df.select("symbol", day).join(
        whole.select("symbol", "_d", pl.lit(True).alias("s")),
        on=["symbol", "_d"],
        how="left",
        maintain_order="left",
    )
    return marked["s"].fill_null(False)


def _value_bounds(df: pl.DataFrame, policy: IngestPolicy) -> bool:
    """Whether no row breaks any of `value_rules`, from column aggregates (no row masks):
    NaN-free columns, price minima above zero and maxima within `max_price`, non-negative
    volume and amount, no overflowing close x volume, and each OHLC relation as the sign of
    the largest difference (for finite values `a - b > 0` exactly when `a > b`). False means
    "not sure": the full checks decide."""
    hi, lo = pl.col("high"), pl.col("low")
    slack = hi * policy.ohlc_tolerance
    floor = lo - slack
    row = df.select(
        pl.any_horizontal([pl.col(c).is_nan().any() for c in VALUE_COLS]).alias("nan"),
        pl.min_horizontal([pl.col(c).min() for c in PRICE_COLS]).alias("min_price"),
        pl.max_horizontal([pl.col(c).max() for c in PRICE_COLS]).alias("max_price"),
        pl.min_horizontal(pl.col("volume").min(), pl.col("amount").min()).alias("min_qty"),
        pl.max_horizontal(pl.col("volume").max(), pl.col("amount").max()).alias("max_qty"),
        pl.col("close").max().alias("max_close"),
        pl.col("volume").max().alias("max_volume"),
        (floor - hi).max().alias("low_over_high"),
        (pl.max_horizontal("open", "close") - (hi + slack)).max().alias("above_high"),
        (floor - pl.min_horizontal("open", "close")).max().alias("below_low"),
    ).row(0, named=True)
    if row["nan"] or any(v is None for v in row.values()):
        return False
    return bool(
        row["min_price"] > 0
        and row["max_price"] <= policy.max_price
        and row["min_qty"] >= 0
        and math.isfinite(row["max_qty"])
        and math.isfinite(row["max_close"] * row["max_volume"])
        and row["low_over_high"] <= 0
        and row["above_high"] <= 0
        and row["below_low"] <= 0
    )


def _suspended_runs(
    flat_rows: np.ndarray, close: np.ndarray, first: np.ndarray, length: np.ndarray
) -> np.ndarray:
    """A bool per (symbol, day) run: every bar flat with no volume, all at one level (a
    client's fill of a suspension). Only the runs holding flat rows are looked at."""
    run = np.searchsorted(first, flat_rows, side="right") - 1
    whole = np.bincount(run, minlength=first.size) == length
    if whole.any():  # one level: each flat row's close equals its run's first close
        moved = whole[run] & (close[flat_rows] != close[first[run]])
        whole[run[moved]] = False
    return whole


def _clean_fast(
    df: pl.DataFrame,
    session: Session,
    policy: IngestPolicy,
    ts_label: Literal["end", "start"],
    bar_minutes: int | None,
) -> tuple[pl.DataFrame, int, dict[str, int]] | None:
    """The common case in few passes: rows already strictly in (symbol, ts) order, no missing
    or out-of-range value, every stamp on the session's bar grid. Zero-price and suspended
    bars are dropped exactly as `validate_bars` does. Returns None whenever anything else is
    seen; `validate_bars` then runs its full checks, which name the problem (or sort).
    """
    if df.is_empty() or not isinstance(df.schema["ts"], pl.Datetime):
        return None
    if any(df[c].null_count() for c in ("symbol", "ts", *VALUE_COLS)):  # kept with the data
        return None
    if not df["symbol"].is_sorted():
        return None
    flat = ((pl.col("volume") == 0) & (pl.col("high") == pl.col("low"))).alias("flat")
    flat_mask = df.select(flat).to_series()
    dropped: dict[str, int] = {}
    if flat_mask.any():  # zero-price bars are flat: counted among those rows only
        zero_mask = flat_mask & df.select(ZERO_PRICE_BAR).to_series()
        n_zero = int(zero_mask.sum())
        if n_zero:
            if policy.on_zero_price_bars != "drop":
                return None
            df, flat_mask = df.filter(~zero_mask), flat_mask.filter(~zero_mask)
            dropped["zero_price_bars"] = n_zero
            if df.is_empty():
                return None
    if not _value_bounds(df, policy):
        return None
    n = df.height
    new, t = symbol_starts(df)
    if not ((t[1:] > t[:-1]) | new[1:]).all():
        return None  # not strictly in time order within a symbol
    new_day = day_starts(new, t)
    flat_rows = np.flatnonzero(flat_mask.to_numpy())
    if flat_rows.size:  # whole (symbol, day)s flat at one level with no volume: suspensions
        first = np.flatnonzero(new_day)
        length = np.diff(np.append(first, n))
        whole = _suspended_runs(flat_rows, df["close"].to_numpy(), first, length)
        if whole.any():
            keep = ~np.repeat(whole, length)
            df = df.filter(pl.Series(keep))
            dropped["suspended_day_bars"] = n - int(keep.sum())
            sid = np.cumsum(new)[keep]
            t, n = t[keep], df.height
            if n == 0:
                return None
            new = np.diff(sid, prepend=-1) != 0
            new_day = day_starts(new, t)
    if bar_minutes == 0 or (bar_minutes is None and not (t % US_PER_DAY).any()):
        return df, 0, dropped  # daily bars: strict order already rules out duplicates
    minute = t // US_PER_MIN
    if (minute * US_PER_MIN != t).any():
        return None  # a stamp off the whole minute: off any bar grid
    gap = np.zeros(n, dtype=np.int64)
    np.subtract(minute[1:], minute[:-1], out=gap[1:])
    counted = ~new_day & (gap > 0)
    if not counted.any():
        return None  # one bar a day with clock stamps: the full checks decide
    size = int(np.bincount(gap[counted]).argmax())  # the modal gap (smallest of ties)
    sym_first = np.flatnonzero(new)
    n_gaps = np.add.reduceat(counted.astype(np.int64), sym_first)
    min_gap = np.minimum.reduceat(np.where(counted, gap, np.iinfo(np.int64).max), sym_first)
    if ((n_gaps >= 3) & (min_gap != size)).any():
        return None  # mixed bar sizes
    if bar_minutes is not None and size != bar_minutes:
        return None
    grid = np.zeros(24 * 60, dtype=bool)
    grid[[b.hour * 60 + b.minute for b in session.bar_end_times(size)]] = True
    shift = size if ts_label == "start" else 0
    if not grid[(minute + shift) % (24 * 60)].all():
        return None  # off the session or the bar grid
    if ts_label == "start":
        df = df.with_columns(pl.col("ts") + pl.duration(minutes=size))
    return df, size, dropped


def validate_bars(
    df: pl.DataFrame,
    file: str,
    session: Session,
    policy: IngestPolicy,
    ts_label: Literal["end", "start"] = "end",
    bar_minutes: int | None = None,
) -> tuple[pl.DataFrame, int, dict[str, int]]:
    """Run every check on one chunk; returns (clean chunk sorted by symbol/ts, bar minutes or 0
    for daily bars, rows dropped per reason). Clean, ordered chunks take a fast path
    (`_clean_fast`) with the same result; any other goes through `validate_fully`."""
    fast = _clean_fast(df, session, policy, ts_label, bar_minutes)
    if fast is not None:
        return fast
    return validate_fully(df, file, session, policy, ts_label, bar_minutes)


def validate_fully(
    df: pl.DataFrame,
    file: str,
    session: Session,
    policy: IngestPolicy,
    ts_label: Literal["end", "start"] = "end",
    bar_minutes: int | None = None,
) -> tuple[pl.DataFrame, int, dict[str, int]]:
    """`validate_bars` without its fast path: sorts, then counts every rule and names the
    first one broken (the reference the fast path is tested against)."""
    dropped: dict[str, int] = {}
    zero = df.select(ZERO_PRICE_BAR.sum()).item()
    if zero and policy.on_zero_price_bars == "drop":
        df = df.filter(~ZERO_PRICE_BAR)
        dropped["zero_price_bars"] = zero
    elif zero:
        _first_violation(
            df,
            [
                Rule(
                    "zero",
                    ZERO_PRICE_BAR,
                    ValueRangeError,
                    "are zero-price no-trade bars (set on_zero_price_bars=drop "
                    "to treat them as missing)",
                    "close",
                )
            ],
            file,
        )
    suspended = suspended_day_bars(df)
    n_susp = int(suspended.sum())
    if n_susp:
        df = df.filter(~suspended)
        dropped["suspended_day_bars"] = n_susp
    _first_violation(df, value_rules(policy.ohlc_tolerance, policy.max_price), file)
    if df.is_empty():
        return df, bar_minutes or 0, dropped
    daily = bar_minutes == 0 or (bar_minutes is None and is_daily(df))
    size = 0
    s = _with_neighbours(df)
    if not daily:
        try:
            size = detect_bar_minutes(s, file)
        except BarSizeError:  # a stray stamp is outside the session, not a bar size of its own
            if ts_label == "end":
                _first_violation(df, [outside_session_rule(session)], file)
            raise
        if size == 0 and bar_minutes:
            raise BarSizeError(
                f"has one bar per symbol and day (daily data) but earlier input/store has "
                f"{bar_minutes}-minute bars; use another store",
                file=file,
                column="ts",
                count=df.height,
            )
        daily = size == 0
    if not daily:
        if bar_minutes is not None and size != bar_minutes:
            raise BarSizeError(
                f"has {size}-minute bars but earlier input/store has {bar_minutes}-minute bars",
                file=file,
                column="ts",
                count=df.height,
            )
        if ts_label == "start":
            s = s.with_columns(pl.col("ts") + pl.duration(minutes=size))
        check_session(s, file, session, size)
    _first_violation(s, structure_rules("_row" in s.columns, policy), file)
    if "_unsorted" in s.columns and policy.on_unsorted == "sort":
        n = int(s["_unsorted"].sum())
        if n:
            log.warning("%s: %d rows out of time order; sorted", file, n)
    return s.drop([c for c in ("_same", "_gap", "_unsorted") if c in s.columns]), size, dropped
