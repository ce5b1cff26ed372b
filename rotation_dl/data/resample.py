"""Exact resampling of bars to coarser sizes on the session clock.

A target bar ending at session minute k*every collects the source bars ending in
((k-1)*every, k*every]: first open, max high, min low, last close, summed volume and amount.
Bar ends follow the session, so 60-minute A-share bars end 10:30, 11:30, 14:00 and 15:00.
"""

from __future__ import annotations

import polars as pl

from rotation_dl.errors import ConfigError
from rotation_dl.session import Session

OHLCV_AGGS = [  # first open, max high, min low, last close, summed volume and amount
    pl.col("open").first(),
    pl.col("high").max(),
    pl.col("low").min(),
    pl.col("close").last(),
    pl.col("volume").sum(),
    pl.col("amount").sum(),
]


def resample_bars(
    bars: pl.LazyFrame, every: int | str, session: Session, source_minutes: int = 1
) -> pl.LazyFrame:
    """Resample canonical stock bars to `every` minutes, or to daily bars with `every="1d"`.

    Args:
        bars: canonical bars (symbol, ts, open, high, low, close, volume, amount).
        every: target bar minutes (a multiple of `source_minutes`), or "1d".
        session: trading session that defines the bar grid.
        source_minutes: the input's bar size, checked against `every`.

    Returns:
        Bars in the same schema (daily: `date` instead of `ts`), sorted by symbol and time.
    """
    if every in ("1d", "daily", "D"):
        return (
            bars.sort("symbol", "ts")
            .group_by("symbol", pl.col("ts").dt.date().alias("date"), maintain_order=True)
            .agg(OHLCV_AGGS)
            .sort("symbol", "date")
        )
    every = int(every)
    if every < source_minutes or every % source_minutes:
        raise ConfigError(
            f"cannot resample {source_minutes}-minute bars to {every} minutes: "
            "the target must be a multiple of the source bar size"
        )
    clock = session.clock(pl.col("ts"))
    bucket = ((clock + every - 1) // every * every).clip(upper_bound=session.length)
    target = session.clock_to_ts(pl.col("ts").dt.date(), bucket)
    return (
        bars.sort("symbol", "ts")
        .with_columns(target.alias("_target"))
        .group_by("symbol", "_target", maintain_order=True)
        .agg(OHLCV_AGGS)
        .rename({"_target": "ts"})
        .sort("symbol", "ts")
    )
