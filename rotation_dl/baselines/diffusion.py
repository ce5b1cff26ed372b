"""Diffusion-index industry rotation (METHODOLOGY section 1).

Per stock and day a momentum indicator in [0, 1]; an industry's DI is the mean over its
constituents (point-in-time) that have enough history. Comparisons are strict (>), lags count
market-calendar days, a stock without a close on either day is left out. Variants:

* `lag`           1[close_t > close_{t-k}], k = 20
* `multi_horizon` the mean over k = 1..K of the k-day diffusion index, K = 20 (default). Two
  readings, `multi_horizon` option: `per_lag` (default) averages K shares, share_k = the share
  of constituents valid at t and t-k with close_t > close_{t-k}, and is undefined unless all K
  are; `per_stock` averages each stock over the lags it has (history must reach back K days),
  then the stocks. `per_lag` is the default because each term is itself a diffusion index over
  a well-defined population (the literal "mean of K diffusion indices"); `per_stock` weights a
  stock with gaps by the lags it happens to have.
* `above_ma`      1[close_t > SMA_k(close)_t], k = 20, over the valid closes of the window; a
  stock needs at least `min_valid` of them (default: all k), else it is left out that day
* `ema`           exponential smoothing (span ~ 10) of the `lag` DI
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import polars as pl

from rotation_dl.backtest.selection import tie_round
from rotation_dl.data.matrix import CloseMatrix, close_matrix, industry_mean, membership
from rotation_dl.errors import ConfigError

Variant = Literal["lag", "multi_horizon", "above_ma", "ema"]
Eligibility = Literal["per_lag", "per_stock"]
VARIANTS: tuple[str, ...] = get_args(Variant)  # the one list: config and yaml follow it


def stock_indicator(
    m: CloseMatrix, variant: Variant, k: int = 20, min_valid: int | None = None
) -> np.ndarray:
    """Indicator [D, S] in [0, 1]; NaN where the stock lacks the closes it needs
    (`multi_horizon` here is the `per_stock` reading; `min_valid`: above_ma's minimum valid
    closes in the window, default k)."""
    c = m.close
    if variant in ("lag", "ema"):
        lag = m.lagged(k)
        ok = np.isfinite(c) & np.isfinite(lag)
        return np.where(ok, (c > lag).astype(float), np.nan)
    if variant == "multi_horizon":
        hits = np.zeros_like(c)
        seen = np.zeros_like(c)
        for j in range(1, k + 1):
            lag = m.lagged(j)
            ok = np.isfinite(c) & np.isfinite(lag)
            hits += np.where(ok, c > lag, False)
            seen += ok
        enough = np.isfinite(c) & np.isfinite(m.lagged(k))  # history reaches back K days
        with np.errstate(invalid="ignore"):
            return np.where(enough & (seen > 0), hits / np.maximum(seen, 1), np.nan)
    if variant == "above_ma":
        window = np.stack([m.lagged(j) for j in range(k)])  # [k, D, S], j = 0 is today
        n = np.isfinite(window).sum(axis=0)
        with np.errstate(invalid="ignore"):
            sma = np.nansum(window, axis=0) / np.maximum(n, 1)
        need = k if min_valid is None else min_valid
        if not 1 <= need <= k:
            raise ConfigError(f"above_ma minimum valid closes must be in 1..{k}, got {need}")
        ok = np.isfinite(c) & (n >= need)
        return np.where(ok, (c > sma).astype(float), np.nan)
    raise ConfigError(f"unknown diffusion variant {variant!r}; choose from {list(VARIANTS)}")


def per_lag_di(
    m: CloseMatrix, member: np.ndarray, n_industries: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """`multi_horizon`, `per_lag`: the mean of the K lag-j diffusion indices (j = 1..K), each
    over the constituents valid at t and t-j; NaN unless all K are defined. Returns (DI, the
    smallest population of the K)."""
    total = np.zeros((len(m.dates), n_industries))
    smallest = np.full((len(m.dates), n_industries), np.inf)
    for j in range(1, k + 1):
        lag = m.lagged(j)
        ok = np.isfinite(m.close) & np.isfinite(lag)
        share, n = industry_mean(np.where(ok, (m.close > lag).astype(float), np.nan), member,
                                 n_industries)  # fmt: skip
        total += share  # NaN stays NaN: undefined unless every lag is
        smallest = np.minimum(smallest, n)
    return total / k, np.where(np.isfinite(smallest), smallest, 0)


def diffusion_index(
    daily: pl.DataFrame | pl.LazyFrame,
    classification: pl.DataFrame,
    variant: Variant = "multi_horizon",
    k: int = 20,
    ema_span: float = 10.0,
    min_constituents: int = 1,
    multi_horizon: Eligibility = "per_lag",
    above_ma_min_valid: int | None = None,
) -> pl.DataFrame:
    """(date, industry, di, n) from adjusted daily closes and a classification.

    Args:
        daily: symbol, date, close (adjusted), optional volume (0 = suspended: no close).
        classification: symbol, industry, start, end.
        variant: lag | multi_horizon | above_ma | ema.
        k: lag / horizon / moving-average length in trading days.
        ema_span: smoothing span for `ema`.
        min_constituents: DI is null when fewer stocks qualify.
        multi_horizon: `per_lag` (default) or `per_stock` (see the module docstring).
        above_ma_min_valid: above_ma's minimum valid closes in the window (default k).
    """
    m = close_matrix(daily)
    industries, member = membership(m, classification)
    if variant == "multi_horizon" and multi_horizon == "per_lag":
        di, n = per_lag_di(m, member, len(industries), k)
    elif variant == "multi_horizon" and multi_horizon != "per_stock":
        raise ConfigError(f"multi_horizon={multi_horizon!r}: use per_lag or per_stock")
    else:
        ind = stock_indicator(m, variant, k, above_ma_min_valid)
        di, n = industry_mean(ind, member, len(industries))
    di = np.where(n >= min_constituents, di, np.nan)
    if variant == "ema":
        alpha = 2.0 / (ema_span + 1.0)
        out = np.full_like(di, np.nan)
        for t in range(di.shape[0]):  # a short loop over days, vectorised over industries
            prev = out[t - 1] if t else np.full(di.shape[1], np.nan)
            cur = di[t]
            out[t] = np.where(
                np.isnan(prev),
                cur,
                np.where(np.isnan(cur), prev, alpha * cur + (1 - alpha) * prev),
            )
        di = out
    D, N = di.shape
    return pl.DataFrame(
        {
            "date": np.repeat(np.asarray(m.dates, dtype="datetime64[D]"), N),
            "industry": np.tile(np.asarray(industries), D),
            "di": di.reshape(-1),
            "n": n.reshape(-1).astype(np.int64),
        }
    ).with_columns(pl.col("date").cast(pl.Date), pl.col("di").fill_nan(None))


def di_rankings(di: pl.DataFrame, dates: list) -> pl.DataFrame:
    """DI ranking on each of `dates` with the change since the previous one in `dates`:
    date, industry, di, rank (1 = highest; ties by name), di_change, rank_change."""
    sub = di.filter(pl.col("date").is_in(dates)).sort("date", "industry")
    ranked = sub.with_columns(
        pl.struct(tie_round(pl.col("di")).fill_null(-1.0).neg(), "industry")
        .rank("ordinal")
        .over("date")
        .alias("rank")
    ).sort("industry", "date")
    return ranked.with_columns(
        (pl.col("di") - pl.col("di").shift(1).over("industry")).alias("di_change"),
        (
            pl.col("rank").cast(pl.Int64).shift(1).over("industry") - pl.col("rank").cast(pl.Int64)
        ).alias("rank_change"),
    ).sort("date", "rank")
