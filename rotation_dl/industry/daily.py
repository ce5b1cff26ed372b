"""Adjusted daily stock bars from the canonical store: the input of the diffusion baseline, the
micro-cap timing model, the factor IC monitor and constituent-based industry returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from rotation_dl.data.readers import (
    ColumnMapping,
    normalize_symbols,
    read_adjustment,
    read_bars_file,
)
from rotation_dl.data.resample import resample_bars
from rotation_dl.data.store import (
    read_manifest,
    resolve_version,
    scan_store,
    store_has_pre_close,
)
from rotation_dl.errors import DataError
from rotation_dl.industry.aggregate import adjust_bars
from rotation_dl.session import Session

DAILY_COLUMNS = ("open", "high", "low", "close", "volume", "amount")


def factors_from_pre_close(daily: pl.DataFrame) -> pl.DataFrame:
    """Backward-adjustment factors from the exchange's previous close: F_t = prod over s <= t
    of close_{s-1} / pre_close_s, so adjusted close_t / adjusted close_{t-1} = close_t /
    pre_close_t (the day's true return). A day without pre_close counts as no action."""
    step = (pl.col("close").shift(1).over("symbol") / pl.col("pre_close")).fill_null(1.0)
    step = pl.when(step.is_finite() & (step > 0)).then(step).otherwise(1.0)
    return (
        daily.sort("symbol", "date")
        .with_columns(step.alias("_step"))
        .select("symbol", "date", pl.col("_step").cum_prod().over("symbol").alias("factor"))
    )


def daily_bars(
    store: str | Path,
    session: Session,
    *,
    timezone: str = "Asia/Shanghai",
    adjustment: str | Path | None = None,
    adjustment_columns: Mapping[str, str] | None = None,
    adjusted_daily: str | Path | None = None,
    adjusted_daily_columns: Mapping[str, str] | None = None,
    columns: Sequence[str] | None = None,
    store_version: int | None = None,
) -> pl.DataFrame:
    """Adjusted daily bars (symbol, date, open, high, low, close, volume, amount).

    A daily store is multiplied by adjustment factors when given, else by factors derived from
    its `pre_close` column when it has one (else used as stored). From an
    intraday store: adjusted daily bars when given (`adjusted_daily`), else the store resampled
    to days on `session` and multiplied by adjustment factors when given. Whether the result
    is really adjusted is checked by the stages (`data.limits.check_adjusted`). `columns`
    (besides symbol and date) keeps only what the caller needs: memory on long histories.
    """
    keep = ["symbol", "date", *(columns or DAILY_COLUMNS)]
    man = read_manifest(Path(store))
    if man is None:
        raise DataError("not a rotation_dl store; run `rotation-dl ingest` first", file=str(store))
    version = resolve_version(store, store_version)
    if man.frequency == "daily":
        lf = scan_store(store, version=version)
        has_pre = store_has_pre_close(store, version)
        if adjustment is None and not has_pre:
            return lf.select(keep).collect()
        extra = ["pre_close"] if has_pre and adjustment is None else []
        daily = lf.select(list(dict.fromkeys([*keep, "close", *extra])))
        daily = daily.sort("symbol", "date").collect()
        if adjustment is not None:
            factors = read_adjustment(adjustment, columns=adjustment_columns)
        else:
            factors = factors_from_pre_close(daily)
        adjusted = adjust_bars(daily.lazy(), factors).collect()
        return adjusted.select(keep)  # no raw pre_close beside adjusted prices
    if adjusted_daily is not None:
        mapping = ColumnMapping(columns=dict(adjusted_daily_columns or {}))
        raw = read_bars_file(
            Path(adjusted_daily), mapping, timezone=timezone, with_row_index=False
        ).collect()
        raw = normalize_symbols(raw)
        return raw.with_columns(
            pl.col("ts").dt.date().alias("date"), pl.col("volume").fill_null(0.0).fill_nan(0.0)
        ).select(keep)
    daily = resample_bars(scan_store(store, version=version), "1d", session)
    if adjustment is not None:
        daily = adjust_bars(daily, read_adjustment(adjustment, columns=adjustment_columns))
    return daily.select(keep).collect()


def raw_daily_closes(
    store: str | Path, session: Session, store_version: int | None = None
) -> pl.DataFrame:
    """The store's own daily closes (symbol, date, close), unadjusted: a daily store's as
    stored, an intraday store's last bar of each day."""
    man = read_manifest(Path(store))
    if man is None:
        raise DataError("not a rotation_dl store; run `rotation-dl ingest` first", file=str(store))
    version = resolve_version(store, store_version)
    lf = scan_store(store, version=version)
    if man.frequency == "daily":
        return lf.select("symbol", "date", "close").collect()
    return resample_bars(lf, "1d", session).select("symbol", "date", "close").collect()
