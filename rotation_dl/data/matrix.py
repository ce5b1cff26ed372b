"""Dense day x stock close matrices on the market calendar (lags are calendar days, not a
stock's own bars; a missing close is NaN)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl


@dataclass
class CloseMatrix:
    dates: list[date]
    symbols: list[str]
    close: np.ndarray  # [D, S] float64, NaN where the stock has no close that day

    def lagged(self, k: int) -> np.ndarray:
        """close_{t-k} aligned to t (NaN for the first k days)."""
        out = np.full_like(self.close, np.nan)
        if k < len(self.dates):
            out[k:] = self.close[: len(self.dates) - k]
        return out


def close_matrix(daily: pl.DataFrame | pl.LazyFrame, price_col: str = "close") -> CloseMatrix:
    """(symbol, date, close[, volume]) -> CloseMatrix; zero-volume days count as no close."""
    lf = daily.lazy()
    schema = lf.collect_schema()
    if "volume" in schema:
        lf = lf.filter(pl.col("volume").is_null() | (pl.col("volume") > 0))
    df = (
        lf.filter(pl.col(price_col) > 0)
        .select(  # dense ranks are the positions in the sorted unique dates and symbols
            (pl.col("date").rank("dense") - 1).cast(pl.Int64).alias("_di"),
            (pl.col("symbol").rank("dense") - 1).cast(pl.Int64).alias("_si"),
            pl.col(price_col).cast(pl.Float64),
            "date",
            "symbol",
        )
        .collect()
    )
    dates = df["date"].unique().sort().to_list()
    symbols = df["symbol"].unique().sort().to_list()
    close = np.full((len(dates), len(symbols)), np.nan)
    close[df["_di"].to_numpy(), df["_si"].to_numpy()] = df[price_col].to_numpy()
    return CloseMatrix(dates, symbols, close)


def membership(m: CloseMatrix, classification: pl.DataFrame) -> tuple[list[str], np.ndarray]:
    """Industry index [D, S] (-1 where a stock has no industry that day) and industry names."""
    industries = sorted(classification["industry"].unique().to_list())
    code = {ind: i for i, ind in enumerate(industries)}
    sym = {s: j for j, s in enumerate(m.symbols)}
    out = np.full(m.close.shape, -1, dtype=np.int32)
    dates = np.asarray(m.dates, dtype="datetime64[D]")
    cls = classification.filter(pl.col("symbol").is_in(m.symbols))
    starts = cls["start"].to_numpy().astype("datetime64[D]")
    ends = cls["end"].to_numpy().astype("datetime64[D]")
    lo = np.where(np.isnat(starts), 0, np.searchsorted(dates, starts, "left"))
    hi = np.where(np.isnat(ends), len(dates), np.searchsorted(dates, ends, "right"))
    cols = np.array([sym[s] for s in cls["symbol"].to_list()], dtype=np.int64)
    codes = np.array([code[i] for i in cls["industry"].to_list()], dtype=np.int32)
    for a, b, j, c in zip(lo, hi, cols, codes, strict=True):  # one slice per classification row
        out[a:b, j] = c
    return industries, out


def industry_mean(
    values: np.ndarray, member: np.ndarray, n_industries: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per day and industry: mean of finite `values` over member stocks, and their count."""
    D = values.shape[0]
    ok = np.isfinite(values) & (member >= 0)
    idx = np.where(ok, member, n_industries)  # bucket n_industries collects the rest
    sums = np.zeros((D, n_industries + 1))
    counts = np.zeros((D, n_industries + 1))
    rows = np.repeat(np.arange(D)[:, None], values.shape[1], axis=1)
    np.add.at(sums, (rows, idx), np.where(ok, values, 0.0))
    np.add.at(counts, (rows, idx), ok)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums[:, :n_industries] / counts[:, :n_industries]
    return mean, counts[:, :n_industries]


def aligned_matrix(daily: pl.DataFrame | pl.LazyFrame, m: CloseMatrix, col: str) -> np.ndarray:
    """Another price column (e.g. open) on the same [D, S] grid as `m` (NaN where missing)."""
    df = daily.lazy().filter(pl.col(col) > 0).select("symbol", "date", col).collect()
    di_map = {d: i for i, d in enumerate(m.dates)}
    si_map = {s: j for j, s in enumerate(m.symbols)}
    df = df.filter(pl.col("date").is_in(m.dates) & pl.col("symbol").is_in(m.symbols))
    out = np.full(m.close.shape, np.nan)
    di = df["date"].replace_strict(di_map, return_dtype=pl.Int64).to_numpy()
    si = df["symbol"].replace_strict(si_map, return_dtype=pl.Int64).to_numpy()
    out[di, si] = df[col].to_numpy()
    return np.where(np.isfinite(m.close), out, np.nan)
