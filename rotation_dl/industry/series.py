"""Industry-level series (index bars, sector ETFs, a vendor's industry bars) -> industry bars.

With `data=industry_series` the store holds one series per industry (`symbol` is the industry)
and there are no constituents: each series becomes its industry's bars directly, in the same
schema as bars aggregated from stocks, so features, panel, training, backtest, export and
scoring run unchanged. What only constituents can give is left empty: `up_share` is null and
`n_active` is 1 where the series has a bar (0 on the grid's gaps), so features built on them
are not offered (`features.bars.SERIES_FEATURES`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path

import polars as pl

from rotation_dl.artifacts import atomic_write_parquet
from rotation_dl.data.readers import read_adjustment
from rotation_dl.data.resample import resample_bars
from rotation_dl.data.store import (
    scan_store,
    store_provenance,
)
from rotation_dl.errors import StoreError
from rotation_dl.industry.aggregate import add_return_index, add_vwap_gap, adjust_bars
from rotation_dl.industry.build import (
    IndustryBarsResult,
    as_bars,
    open_for_build,
    pre_close_factors,
)
from rotation_dl.session import Session


def series_returns(bars: pl.LazyFrame) -> pl.LazyFrame:
    """Per-series bar aggregates in the shape `add_return_index` takes: ret (close over the
    previous bar's close; the first bar's over its own open), open/high/low relative to the
    previous close, n_active = 1, volume, amount, vwap_gap; up_share is null."""
    prev = pl.col("close").shift(1).over("industry").fill_null(pl.col("open"))
    return (
        bars.filter(pl.col("close") > 0)
        .rename({"symbol": "industry"})
        .sort("industry", "ts")
        .with_columns(prev.alias("_pc"))
        .with_columns((pl.col("close") / pl.col("_pc") - 1).alias("_ret"))
        .select(
            "industry",
            "ts",
            pl.lit(1, pl.UInt32).alias("n_active"),
            pl.col("_ret").alias("ret_ew"),  # one series: equal = amount weighted
            pl.col("_ret").alias("ret_aw"),
            (pl.col("open") / pl.col("_pc")).alias("_ro"),
            (pl.col("high") / pl.col("_pc")).alias("_rh"),
            (pl.col("low") / pl.col("_pc")).alias("_rl"),
            pl.col("_vwap_gap").alias("vwap_gap"),
            pl.lit(None, pl.Float64).alias("up_share"),
            "volume",
            "amount",
        )
    )


def build_series_industry_bars(
    store: str | Path,
    output: str | Path | None,
    *,
    adjustment: str | Path | None = None,
    adjustment_columns: Mapping[str, str] | None = None,
    bar_minutes: int | None = None,
    session: Session,
    start: date | None = None,
    end: date | None = None,
    store_version: int | None = None,
) -> IndustryBarsResult:
    """A store of industry series -> industry bars parquet at `output` (atomic; None: not
    written). Prices are taken as adjusted (an `adj_close` column was applied at ingest), or
    multiplied by `adjustment` factors, or by factors from a daily store's `pre_close`."""
    manifest, version = open_for_build(store, bar_minutes, store_version)
    daily = manifest.frequency == "daily"
    bars = add_vwap_gap(as_bars(scan_store(store, start, end, version=version), daily))
    factors = (
        read_adjustment(adjustment, columns=adjustment_columns)
        if adjustment is not None
        else (pre_close_factors(store, end, version) if daily else None)
    )
    if factors is not None:
        bars = adjust_bars(bars, factors)
    size = manifest.bar_minutes
    if bar_minutes and bar_minutes != size:
        vwap = bars.select("symbol", "ts", "_vwap_gap")
        bars = resample_bars(bars.drop("_vwap_gap"), bar_minutes, session, source_minutes=size)
        bars = bars.join(vwap, on=["symbol", "ts"], how="left")  # the last source bar's gap
        size = bar_minutes
    agg = series_returns(bars).collect()
    if agg.is_empty():
        raise StoreError(f"{store}: no series bars between {start} and {end}")
    frame = (
        add_return_index(agg.lazy(), agg["industry"].unique(), agg["ts"].unique(), "equal")
        .collect()
        .sort("industry", "ts")
    )
    out = Path(output) if output is not None else None
    if out is not None:
        atomic_write_parquet(frame, out, store_provenance(store, version))
    return IndustryBarsResult(out, frame, size, version)
