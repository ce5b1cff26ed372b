"""Adjusted stock bars of a date range, with each bar's industry: what the stock panel reads.

The same steps as the industry-bar build (raw VWAP gap, adjustment factors as of each day,
point-in-time industry, returns over the previous bar), for a slice of the store's history.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

import polars as pl

from rotation_dl.data.industry import add_vwap_gap, adjust_bars, map_industries, stock_bar_returns
from rotation_dl.data.industry_build import as_bars
from rotation_dl.data.store import scan_store


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
) -> pl.DataFrame:
    """Stock bars of [first, last] adjusted by `factors` (symbol, date, factor; None: as
    stored), with industry, prev_close, ret and _vwap_gap; sorted by symbol and ts."""
    bars = add_vwap_gap(as_bars(scan_store(store, first, last, version=version), daily))
    if factors is not None:
        bars = adjust_bars(bars, factors.filter(pl.col("date") <= last).lazy())
    mapped = map_industries(bars, classification, on_unmapped, source=source)
    return stock_bar_returns(mapped.sort("symbol", "ts"), presorted=True).collect()
