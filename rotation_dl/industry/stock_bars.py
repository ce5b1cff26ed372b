"""Adjusted stock bars of a date range, with each bar's industry: what the stock panel reads.

The same steps as the industry-bar build (raw VWAP gap, adjustment factors as of each day,
point-in-time industry, returns over the previous bar), for a slice of the store's history.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

import polars as pl

from rotation_dl.data.resample import resample_bars
from rotation_dl.data.store import scan_store
from rotation_dl.industry.aggregate import (
    add_vwap_gap,
    adjust_bars,
    map_industries,
    stock_bar_returns,
)
from rotation_dl.industry.build import as_bars
from rotation_dl.session import Session


def adjusted_stock_bars(
    store: str | Path,
    first: date,
    last: date,
    classification: pl.DataFrame,
    *,
    daily: bool,
    factors: pl.DataFrame | None = None,
    version: int | None = None,
    on_unmapped: Literal["fail", "drop"] = "drop",
    source: str = "classification",
    bar_minutes: int | None = None,
    store_minutes: int | None = None,
    session: Session | None = None,
) -> pl.DataFrame:
    """Stock bars of [first, last] adjusted by `factors` (symbol, date, factor; None: as
    stored), with industry, prev_close, ret and _vwap_gap; in date order, each stock's rows in
    time order (not sorted by symbol). Intraday
    bars are resampled to `bar_minutes` first when it differs from the store's
    `store_minutes` (as the industry-bar build does)."""
    bars = as_bars(scan_store(store, first, last, version=version), daily)
    if not daily and bar_minutes and store_minutes and bar_minutes != store_minutes:
        if session is None:
            raise ValueError("resampling stock bars needs the trading session")
        bars = resample_bars(bars, bar_minutes, session, source_minutes=store_minutes)
    bars = add_vwap_gap(bars)
    if factors is not None:
        bars = adjust_bars(bars, factors.filter(pl.col("date") <= last).lazy(), presorted=True)
    mapped = map_industries(bars, classification, on_unmapped, source=source)
    # the store's partitions come in date order, each sorted by symbol and ts: every stock's
    # rows are already in time order, which is all the as-of join above and the per-symbol
    # shift need (no sort)
    return stock_bar_returns(mapped, presorted=True).collect()
