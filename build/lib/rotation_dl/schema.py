"""Canonical column names and dtypes, shared by every stage.

Bars (any intraday size):  symbol, ts (exchange-local bar END time), open, high, low, close,
                           volume (shares), amount (currency).
Daily bars:                symbol, date, open, high, low, close, volume (shares),
                           amount (optional), pre_close (optional: the exchange's previous close,
                           from which adjustment factors are derived).
Classification:            symbol, industry, start and end (optional, inclusive dates).
Adjustment factors:        symbol, date, factor (adjusted price = raw price x factor).
Industry bars:             industry, ts, date, open, high, low, close (return index), ret, ret_ew,
                           ret_aw, volume, amount, n_active, up_share, vwap_gap.
"""

from __future__ import annotations

import polars as pl

SYMBOL = "symbol"
TS = "ts"
DATE = "date"
INDUSTRY = "industry"
PRICE_COLS = ("open", "high", "low", "close")

BAR_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts": pl.Datetime("us"),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "amount": pl.Float64(),
}

DAILY_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "date": pl.Date(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "amount": pl.Float64(),
    "pre_close": pl.Float64(),  # null where the source has none
}

CLASSIFICATION_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "industry": pl.String(),
    "start": pl.Date(),
    "end": pl.Date(),
}

ADJUSTMENT_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "date": pl.Date(),
    "factor": pl.Float64(),
}

INDUSTRY_BAR_SCHEMA: dict[str, pl.DataType] = {
    "industry": pl.String(),
    "ts": pl.Datetime("us"),
    "date": pl.Date(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "ret": pl.Float64(),
    "ret_ew": pl.Float64(),
    "ret_aw": pl.Float64(),
    "volume": pl.Float64(),
    "amount": pl.Float64(),
    "n_active": pl.UInt32(),
    "up_share": pl.Float64(),
    "vwap_gap": pl.Float64(),
}
