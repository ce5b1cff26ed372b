"""A synthetic sector-series market: a few industry series (think sector ETFs or level-1
index bars), daily bars over many years, with a planted learnable signal.

What it simulates (seeded, vectorised with numpy):

* **Returns.** Daily log return of series i: ``m_d + f_{i,d} + kappa * s_{i,d-1}``, market and
  sector parts with GARCH(1,1) volatility; the drift term is demeaned across series, so it is
  pure relative (rotation) return.
* **Planted signal.** Each series carries a latent flow state ``s_{i,d}`` (AR(1), phi = 0.8)
  that shows up on day d only in its traded volume (volume x exp(g s_{i,d})) and pays from the
  next day on. Today's volume relative to its trailing mean (the `log_volume_rel` feature)
  therefore predicts next week's excess return; the closes alone carry it only weakly.
  `signal_strength=0` gives a market with no signal; `SeriesMarket.signal` holds the truth.
* **Bars.** Open = previous close x an overnight gap, high/low around open and close, prices on
  a 0.01 tick, volume in round lots, amount = volume x typical price. One bar per day, stamped
  with the date only (daily data), for trading days of the configured calendar (or weekdays).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from rotation_dl.artifacts import atomic_write_parquet
from rotation_dl.errors import ConfigError
from rotation_dl.schema import BAR_SCHEMA
from rotation_dl.synthetic.market import (
    SampleConfig,
    garch_returns,
    latent_flow,
    publish_dir,
    sample_days,
)

SECTORS = (
    "ENERGY",
    "MATERIALS",
    "INDUSTRIALS",
    "DISCRETIONARY",
    "STAPLES",
    "HEALTH",
    "FINANCIALS",
    "TECH",
    "COMMUNICATION",
    "UTILITIES",
    "REALESTATE",
)


@dataclass
class SeriesMarket:
    """Generated industry series (daily bars, `symbol` = industry) and the planted truth."""

    bars: pl.DataFrame
    signal: pl.DataFrame  # date, industry, signal


def series_names(n: int) -> list[str]:
    """Names of the n series: the 11 GICS-like sectors, then SECTOR12, SECTOR13, ..."""
    return [SECTORS[k] if k < len(SECTORS) else f"SECTOR{k + 1}" for k in range(n)]


def make_series_market(cfg: SampleConfig) -> SeriesMarket:
    """Daily bars of `cfg.n_industries` series over `cfg.n_days` trading days."""
    if cfg.bar_minutes != 0:
        raise ConfigError(
            "the sample sector-series market is daily: set data.sample.bar_minutes=0"
        )
    if cfg.n_industries < 3:
        raise ConfigError(f"need at least 3 series, got n_industries={cfg.n_industries}")
    rng = np.random.default_rng(cfg.seed)
    days = sample_days(cfg)
    n_d, n_i = len(days), cfg.n_industries
    g = 0.5 * cfg.signal_strength
    state, drift = latent_flow(rng, n_d, n_i, kappa=0.003 * cfg.signal_strength)
    ret = garch_returns(rng, (n_d, 1), 0.010) + garch_returns(rng, (n_d, n_i), 0.008) + drift
    gap = ret * rng.uniform(0.0, 0.3, (n_d, n_i))
    close = rng.uniform(20, 120, n_i) * np.exp(np.cumsum(ret, axis=0))
    prev = np.vstack([close[:1] * np.exp(-ret[:1]), close[:-1]])
    open_ = prev * np.exp(gap)
    wiggle = np.abs(rng.standard_normal((2, n_d, n_i))) * 0.004
    high = np.maximum(open_, close) * np.exp(wiggle[0])
    low = np.minimum(open_, close) * np.exp(-wiggle[1])
    o, h, lo, c = (np.round(a, 2) for a in (open_, high, low, close))
    h, lo = np.maximum(h, np.maximum(o, c)), np.minimum(lo, np.minimum(o, c))
    base = np.exp(rng.normal(np.log(2e7), 0.5, n_i))
    vol = base * np.exp(g * state + rng.normal(0, 0.3, (n_d, n_i)))
    volume = np.maximum(np.round(vol / 100), 1) * 100
    amount = volume * (o + h + lo + c) / 4
    names = series_names(n_i)
    stamps = np.asarray(days, dtype="datetime64[D]").astype("datetime64[us]")
    bars = pl.DataFrame(
        {
            "symbol": np.tile(np.asarray(names), n_d),
            "ts": np.repeat(stamps, n_i),
            "open": o.ravel(),
            "high": h.ravel(),
            "low": lo.ravel(),
            "close": c.ravel(),
            "volume": volume.ravel(),
            "amount": amount.ravel(),
        },
        schema=BAR_SCHEMA,
    ).sort("symbol", "ts")
    signal = pl.DataFrame(
        {
            "date": np.repeat(np.asarray(days, dtype="datetime64[D]"), n_i),
            "industry": np.tile(np.asarray(names), n_d),
            "signal": state.ravel(),
        }
    ).with_columns(pl.col("date").cast(pl.Date))
    return SeriesMarket(bars, signal)


def write_series_market(out_dir: str | Path, cfg: SampleConfig) -> dict[str, Path]:
    """Write the series market as a raw feed: `bars/series.parquet` and `signal.parquet`."""
    market = make_series_market(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"bars": out / "bars", "signal": out / "signal.parquet"}
    atomic_write_parquet(market.signal, paths["signal"])
    publish_dir(out, "bars", lambda tmp: market.bars.write_parquet(tmp / "series.parquet"))
    return paths
