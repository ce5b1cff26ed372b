"""Industry daily returns for the backtest: from constituents, from industry bars, or a file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl

from rotation_dl.backtest.engine import constituent_daily_returns, industry_daily_returns
from rotation_dl.errors import ConfigError, DataError


def read_returns_file(path: str | Path) -> pl.DataFrame:
    """(date, industry, ret) from a parquet/CSV of index returns (`ret`) or levels (`close`)."""
    p = Path(path)
    if not p.is_file():
        raise DataError("no such returns file", file=str(p))
    f = pl.read_parquet(p) if p.suffix == ".parquet" else pl.read_csv(p, try_parse_dates=True)
    if "ret" not in f.columns:
        if "close" not in f.columns:
            raise DataError("needs a 'ret' or 'close' column", file=str(p), column="ret")
        f = f.sort("industry", "date").with_columns(
            (pl.col("close") / pl.col("close").shift(1).over("industry") - 1).alias("ret")
        )
    return f.select(
        pl.col("date").cast(pl.Date),
        pl.col("industry").cast(pl.String),
        pl.col("ret").cast(pl.Float64),
    ).drop_nulls()


def industry_returns(
    source: Literal["constituents", "industry_bars", "file"],
    *,
    daily: pl.DataFrame | None = None,
    classification: pl.DataFrame | None = None,
    industry_bars_path: str | Path | None = None,
    returns_file: str | Path | None = None,
    weighting: str = "equal",
) -> pl.DataFrame:
    """Industry daily returns (date, industry, ret) from constituents, industry bars, or a file
    of industry index returns (date, industry, ret) or levels (date, industry, close)."""
    if source == "constituents":
        if daily is None or classification is None:
            raise ConfigError("constituent returns need daily bars and a classification")
        return constituent_daily_returns(daily, classification, weighting)
    if source == "industry_bars":
        if industry_bars_path is None:
            raise ConfigError("backtest.returns=industry_bars needs industry bars")
        return industry_daily_returns(pl.scan_parquet(industry_bars_path))
    if source == "file":
        if returns_file is None:
            raise ConfigError("backtest.returns=file needs backtest.returns_file")
        return read_returns_file(returns_file)
    raise ConfigError(f"unknown returns source {source!r}")
