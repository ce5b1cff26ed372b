"""The built-in synthetic sample market: stocks in industries, minute-level bars, a planted signal.

What it simulates (all seeded, vectorised with numpy):

* **Factor structure.** Daily log return of stock s in industry i:
  ``beta_s * m_d + f_{i,d} + e_{s,d}``, with market, industry and idiosyncratic parts each
  following GARCH(1,1) volatility (clustering), clipped at the +-10 % daily price limit.
* **Intraday.** The day's move is split into an overnight gap and bar returns whose variance and
  volume follow a U-shaped intraday profile (busy open, quieter midday, rising into the close);
  OHLC come from the bar path, prices on a 0.01 tick, volume in round lots.
* **Frictions.** Suspension spells (bars with zero volume and a frozen price), randomly missing
  bars, a few feed-style zero-price no-trade bars, new listings part-way through, and cash
  dividends (raw prices drop on the ex-date; `adj_factors` undo it: adjusted = raw x factor).
* **Planted signal.** Each industry carries a latent flow state ``s_{i,d}`` (AR(1), phi = 0.8).
  On day d it shows up only intraday: the industry's stocks trade more in the last hour
  (volume x exp(g s)) and drift up in the last hour while giving the same back earlier in the
  day (so the daily return itself carries nothing). From the next day the industry earns an extra
  ``kappa * s_{i,d-1}`` a day. Hence the intraday price/volume shape of day d predicts the
  industry's next-week return relative to the other industries (oracle rank IC of s vs the 5-day
  forward excess return is about 0.3 at the defaults), while daily closes alone do not. Set
  `signal_strength=0` for a market with no signal. `SampleMarket.signal` holds the truth.
* **Stock-level signal** (`stock_signal_strength`, default 0: off, and the market is then
  bit-identical to one without it). Each stock carries its own latent state ``z_{s,d}`` (AR(1),
  phi = 0.8, from a separate random stream) that shows the same way, intraday only (last-hour
  volume and drift, given back earlier in the day), and pays ``kappa_s * z_{s,d-1}`` a day from
  the next day, demeaned within the stock's industry, so industry returns are unchanged and
  only the ranking of stocks inside an industry carries it (oracle rank IC of z vs the 5-day
  forward excess return about 0.2 at strength 1). `SampleMarket.stock_signal` holds the truth.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from rotation_dl.artifacts import (
    atomic_write_bytes,
    atomic_write_parquet,
    remove_stale_temp_dirs,
    temp_dir_for,
)
from rotation_dl.errors import ConfigError
from rotation_dl.schema import BAR_SCHEMA
from rotation_dl.session import A_SHARE, Session


@dataclass(frozen=True)
class SampleConfig:
    """Knobs of the sample market (defaults: 31 industries, 300 stocks, 15-min bars)."""

    n_industries: int = 31
    n_stocks: int = 300
    n_days: int = 120
    bar_minutes: int = 15
    seed: int = 7
    start: str = "2024-01-02"
    signal_strength: float = 1.0
    suspension_rate: float = 0.003  # chance a stock starts a suspension spell on a given day
    missing_bar_rate: float = 0.002
    zero_price_bar_rate: float = 0.0005
    new_listing_share: float = 0.05
    dividend_rate: float = 0.002
    calendar: str | None = None  # exchange calendar code for the trading days (None: weekdays)
    stock_signal_strength: float = 0.0  # the stock-level planted signal (0: none)


@dataclass
class SampleMarket:
    """Generated market: stock bars, classification, adjustment factors, stock info, truth."""

    bars: pl.DataFrame
    classification: pl.DataFrame
    adj_factors: pl.DataFrame
    stocks: pl.DataFrame
    signal: pl.DataFrame
    config: SampleConfig
    stock_signal: pl.DataFrame | None = None


def sample_days(cfg: SampleConfig) -> list[date]:
    """The sample market's trading days: the configured exchange calendar's sessions from
    `cfg.start`, or weekdays when it has none."""
    from rotation_dl.data.calendar import trading_days as calendar_days

    if cfg.calendar:
        return calendar_days(date.fromisoformat(cfg.start), cfg.n_days, cfg.calendar)
    return trading_days(cfg.start, cfg.n_days)


def trading_days(start: str, n_days: int) -> list[date]:
    """Weekdays from `start`."""
    d = date.fromisoformat(start)
    out: list[date] = []
    while len(out) < n_days:
        if d.weekday() < 5:
            out.append(d)
        d += timedelta(days=1)
    return out


def garch_returns(rng: np.random.Generator, shape: tuple[int, ...], vol: float) -> np.ndarray:
    """Returns with GARCH(1,1) volatility along axis 0 (alpha 0.08, beta 0.9)."""
    alpha, beta = 0.08, 0.90
    omega = vol**2 * (1 - alpha - beta)
    z = rng.standard_normal(shape)
    out = np.empty(shape)
    var = np.full(shape[1:], vol**2)
    for t in range(shape[0]):
        out[t] = np.sqrt(var) * z[t]
        var = omega + alpha * out[t] ** 2 + beta * var
    return out


def latent_flow(
    rng: np.random.Generator, n_days: int, n_series: int, kappa: float, phi: float = 0.8
) -> tuple[np.ndarray, np.ndarray]:
    """The planted signal: a latent AR(1) flow state per series and day (unit variance), and
    the drift it pays from the next day on, kappa x state_{d-1}, demeaned across series (pure
    relative return)."""
    state = np.zeros((n_days, n_series))
    state[0] = rng.standard_normal(n_series)
    for t in range(1, n_days):
        state[t] = phi * state[t - 1] + np.sqrt(1 - phi**2) * rng.standard_normal(n_series)
    drift = np.zeros((n_days, n_series))
    drift[1:] = kappa * state[:-1]
    drift -= drift.mean(axis=1, keepdims=True)
    return state, drift


def _intraday_profile(n_bars: int) -> np.ndarray:
    """U-shaped weights (sum 1) for volume and variance across the day's bars."""
    x = (np.arange(n_bars) + 0.5) / n_bars
    w = 1.0 + 2.5 * np.exp(-x / 0.08) + 1.2 * np.exp(-(1 - x) / 0.1)
    return w / w.sum()


@dataclass
class _Daily:
    days: list[date]
    symbols: list[str]
    industry_of: np.ndarray  # [stock]
    industries: list[str]
    ret: np.ndarray  # [day, stock] daily log return incl. gap
    gap: np.ndarray  # [day, stock] overnight part
    sigma: np.ndarray  # [day, stock] daily vol
    state: np.ndarray  # [day, industry] latent flow state
    listed: np.ndarray  # [day, stock] bool
    suspended: np.ndarray  # [day, stock] bool
    div_factor: np.ndarray  # [day, stock] cumulative hfq factor
    base_amount: np.ndarray  # [stock]
    first_price: np.ndarray  # [stock]
    shares: np.ndarray  # [stock]
    stock_state: np.ndarray | None = None  # [day, stock] stock-level latent state (or None)


def _symbols(n: int, rng: np.random.Generator) -> list[str]:
    sh = rng.choice(np.arange(600000, 604000), size=n - n // 3, replace=False)
    sz = rng.choice(np.arange(1, 3000), size=n // 3, replace=False)
    return sorted([f"{c:06d}.SH" for c in sh] + [f"{c:06d}.SZ" for c in sz])


def _simulate_daily(cfg: SampleConfig) -> _Daily:
    if cfg.n_stocks < 3 * cfg.n_industries:
        raise ConfigError(
            f"sample market needs at least 3 stocks per industry: n_stocks={cfg.n_stocks} < "
            f"3 x n_industries={cfg.n_industries}"
        )
    rng = np.random.default_rng(cfg.seed)
    days = sample_days(cfg)
    n_d, n_s, n_i = cfg.n_days, cfg.n_stocks, cfg.n_industries
    sizes = rng.dirichlet(np.full(n_i, 3.0)) * (n_s - 3 * n_i)
    counts = 3 + np.floor(sizes).astype(int)
    counts[np.argsort(sizes - np.floor(sizes))[::-1][: n_s - counts.sum()]] += 1
    industry_of = rng.permutation(np.repeat(np.arange(n_i), counts))
    industries = [f"IND{k + 1:02d}" for k in range(n_i)]

    state, drift = latent_flow(rng, n_d, n_i, kappa=0.0021 * cfg.signal_strength)

    market = garch_returns(rng, (n_d, 1), 0.012)
    industry = garch_returns(rng, (n_d, n_i), 0.008) + drift
    idio_vol = rng.uniform(0.012, 0.022, n_s)
    idio = garch_returns(rng, (n_d, n_s), 1.0) * idio_vol
    beta = rng.uniform(0.7, 1.3, n_s)
    ret = beta * market + industry[:, industry_of] + idio
    stock_state = None
    if cfg.stock_signal_strength:  # its own stream: the rest of the market is unchanged
        srng = np.random.default_rng(cfg.seed + 3)
        stock_state, sdrift = latent_flow(srng, n_d, n_s, kappa=0.004 * cfg.stock_signal_strength)
        for k in range(n_i):  # pure within-industry relative return
            cols = industry_of == k
            sdrift[:, cols] -= sdrift[:, cols].mean(axis=1, keepdims=True)
        ret = ret + sdrift
    ret = np.clip(ret, np.log(0.901), np.log(1.099))
    sigma = np.sqrt(0.012**2 * beta**2 + 0.008**2 + idio_vol**2) * np.ones((n_d, 1))
    gap = ret * rng.uniform(0.1, 0.4, (n_d, n_s))

    listed = np.ones((n_d, n_s), dtype=bool)
    n_new = int(round(cfg.new_listing_share * n_s))
    for s in rng.choice(n_s, size=n_new, replace=False):
        listed[: rng.integers(1, max(2, n_d // 2)), s] = False
    suspended = np.zeros((n_d, n_s), dtype=bool)
    starts = rng.random((n_d, n_s)) < cfg.suspension_rate
    for t, s in zip(*np.nonzero(starts), strict=True):
        suspended[t : t + rng.integers(1, 8), s] = True
    suspended &= listed
    ret = np.where(suspended | ~listed, 0.0, ret)
    gap = np.where(suspended | ~listed, 0.0, gap)

    div = np.where(
        rng.random((n_d, n_s)) < cfg.dividend_rate, rng.uniform(0.01, 0.05, (n_d, n_s)), 0
    )
    div[0] = 0
    div_factor = np.cumprod(1.0 / (1.0 - div), axis=0)
    return _Daily(
        days=days,
        symbols=_symbols(n_s, rng),
        industry_of=industry_of,
        industries=industries,
        ret=ret,
        gap=gap,
        sigma=sigma,
        state=state,
        listed=listed,
        suspended=suspended,
        div_factor=div_factor,
        base_amount=np.exp(rng.normal(np.log(3e8), 0.8, n_s)),
        first_price=np.exp(rng.uniform(np.log(3), np.log(80), n_s)),
        shares=np.exp(rng.normal(np.log(1e9), 0.9, n_s)).round(-4),
        stock_state=stock_state,
    )


def _day_bars(
    cfg: SampleConfig,
    daily: _Daily,
    t: int,
    prev_true: np.ndarray,
    rng: np.random.Generator,
    session: Session,
) -> tuple[pl.DataFrame, np.ndarray]:
    """Bars of day t for every listed stock; returns (bars, true closing price)."""
    n_b = session.bars_per_day(cfg.bar_minutes)
    n_s = len(daily.symbols)
    prof = _intraday_profile(n_b)
    g, c = 0.35 * cfg.signal_strength, 0.004 * cfg.signal_strength
    s_i = daily.state[t, daily.industry_of]  # [stock]
    late = np.zeros(n_b)
    late[-max(1, n_b // 4) :] = 1.0
    tilt = late / late.sum() - (1 - late) / (1 - late).sum()  # sums to 0

    intraday = daily.ret[t] - daily.gap[t]
    u = rng.standard_normal((n_s, n_b)) * np.sqrt(prof) * daily.sigma[t][:, None] * 0.8
    u += (intraday - u.sum(axis=1))[:, None] * prof  # bridge to the day's intraday return
    u += (c * s_i)[:, None] * tilt
    z_s = None
    if daily.stock_state is not None:
        z_s = daily.stock_state[t] * cfg.stock_signal_strength
        u += (0.004 * z_s)[:, None] * tilt
    active = daily.listed[t] & ~daily.suspended[t]
    u[~active] = 0.0

    true_open = prev_true * np.exp(daily.gap[t])
    true_close_path = true_open[:, None] * np.exp(np.cumsum(u, axis=1))
    true_open_path = np.concatenate([true_open[:, None], true_close_path[:, :-1]], axis=1)
    factor = daily.div_factor[t][:, None]
    o = np.maximum(np.round(true_open_path / factor, 2), 0.01)
    cl = np.maximum(np.round(true_close_path / factor, 2), 0.01)
    wiggle = np.abs(rng.standard_normal((2, n_s, n_b))) * np.sqrt(prof) * 0.004
    hi = np.round(np.maximum(o, cl) * np.exp(wiggle[0]), 2)
    lo = np.maximum(np.round(np.minimum(o, cl) * np.exp(-wiggle[1]), 2), 0.01)

    vol_mult = np.exp(rng.normal(0, 0.35, (n_s, n_b))) * np.exp(g * s_i[:, None] * late)
    if z_s is not None:
        vol_mult = vol_mult * np.exp(0.35 * z_s[:, None] * late)
    surprise = np.exp(0.5 * np.abs(daily.ret[t]) / daily.sigma[t])
    amount = daily.base_amount[:, None] * prof * vol_mult * surprise[:, None]
    vwap = (o + hi + lo + cl) / 4
    volume = np.maximum(np.round(amount / vwap / 100), 1) * 100
    volume[~active] = 0.0
    amount = volume * vwap

    keep = daily.listed[t][:, None] & (rng.random((n_s, n_b)) >= cfg.missing_bar_rate)
    keep |= daily.suspended[t][:, None] & daily.listed[t][:, None]
    zero_px = (rng.random((n_s, n_b)) < cfg.zero_price_bar_rate) & daily.suspended[t][:, None]
    for arr in (o, hi, lo, cl):
        arr[zero_px] = 0.0

    day = daily.days[t]
    ts = [datetime.combine(day, tm) for tm in session.bar_end_times(cfg.bar_minutes)]
    sidx, bidx = np.nonzero(keep)
    frame = pl.DataFrame(
        {
            "symbol": np.asarray(daily.symbols)[sidx],
            "ts": np.asarray(ts, dtype="datetime64[us]")[bidx],
            "open": o[sidx, bidx],
            "high": hi[sidx, bidx],
            "low": lo[sidx, bidx],
            "close": cl[sidx, bidx],
            "volume": volume[sidx, bidx],
            "amount": amount[sidx, bidx],
        },
        schema=BAR_SCHEMA,
    )
    return frame, true_close_path[:, -1]


def _inner_bar_minutes(session: Session) -> int:
    """The bar size daily samples are simulated at (then aggregated): the coarsest common size
    giving at least four bars in the session."""
    for size in (60, 30, 15, 10, 5, 1):
        if session.length % size == 0 and session.length // size >= 4:
            return size
    return 1


def _to_daily(bars: pl.DataFrame, day: date) -> pl.DataFrame:
    """A day's bars -> one bar per stock stamped with the date (no time of day): open, high,
    low, close of the traded bars, summed volume and amount. A suspended stock keeps its flat,
    zero-volume bar (ingest drops such days as suspensions)."""
    from rotation_dl.data.resample import OHLCV_AGGS

    traded = bars.filter(pl.col("close") > 0)
    return (
        traded.group_by("symbol", maintain_order=True)
        .agg(OHLCV_AGGS)
        .with_columns(pl.lit(datetime.combine(day, datetime.min.time())).alias("ts"))
        .select(list(BAR_SCHEMA))
        .cast(BAR_SCHEMA)
    )


def iter_sample_days(
    cfg: SampleConfig, session: Session = A_SHARE
) -> Iterator[tuple[date, pl.DataFrame]]:
    """Yield (day, bars) one trading day at a time, so big markets stream to disk.
    `bar_minutes=0` gives daily bars (simulated intraday, then aggregated)."""
    daily = _simulate_daily(cfg)
    rng = np.random.default_rng(cfg.seed + 1)
    true = daily.first_price * daily.div_factor[0]
    sim = cfg if cfg.bar_minutes else replace(cfg, bar_minutes=_inner_bar_minutes(session))
    for t, day in enumerate(daily.days):
        bars, true = _day_bars(sim, daily, t, true, rng, session)
        yield day, (bars if cfg.bar_minutes else _to_daily(bars, day))


def _tables(cfg: SampleConfig) -> dict[str, pl.DataFrame]:
    daily = _simulate_daily(cfg)
    n_d, n_s = daily.ret.shape
    list_day = np.argmax(daily.listed, axis=0)
    classification = pl.DataFrame(
        {
            "symbol": daily.symbols,
            "industry": [daily.industries[k] for k in daily.industry_of],
            "start": [None] * n_s,
            "end": [None] * n_s,
        },
        schema={"symbol": pl.String, "industry": pl.String, "start": pl.Date, "end": pl.Date},
    )
    adj = pl.DataFrame(
        {
            "symbol": np.tile(np.asarray(daily.symbols), n_d),
            "date": np.repeat(np.asarray(daily.days, dtype="datetime64[D]"), n_s),
            "factor": daily.div_factor.ravel(),
        }
    ).with_columns(pl.col("date").cast(pl.Date))
    stocks = pl.DataFrame(
        {
            "symbol": daily.symbols,
            "industry": [daily.industries[k] for k in daily.industry_of],
            "list_date": [daily.days[k] for k in list_day],
            "shares_outstanding": daily.shares,
        }
    )
    signal = pl.DataFrame(
        {
            "date": np.repeat(
                np.asarray(daily.days, dtype="datetime64[D]"), len(daily.industries)
            ),
            "industry": np.tile(np.asarray(daily.industries), n_d),
            "signal": daily.state.ravel(),
        }
    ).with_columns(pl.col("date").cast(pl.Date))
    tables = {
        "classification": classification,
        "adj_factors": adj,
        "stocks": stocks,
        "signal": signal,
    }
    if daily.stock_state is not None:
        tables["stock_signal"] = pl.DataFrame(
            {
                "date": np.repeat(np.asarray(daily.days, dtype="datetime64[D]"), n_s),
                "symbol": np.tile(np.asarray(daily.symbols), n_d),
                "signal": daily.stock_state.ravel(),
            }
        ).with_columns(pl.col("date").cast(pl.Date))
    return tables


def make_sample_market(
    cfg: SampleConfig | None = None, session: Session = A_SHARE
) -> SampleMarket:
    """Generate the whole sample market in memory (fine up to a few million bars).

    The sample market is an A-share-style market: it trades the A-share session unless another
    `session` is given (the `sample` stage always passes the run's `session`).
    """
    cfg = cfg or SampleConfig()
    if cfg.bar_minutes and session.length % cfg.bar_minutes:
        raise ConfigError(f"bar_minutes={cfg.bar_minutes} does not divide the session")
    bars = pl.concat([b for _, b in iter_sample_days(cfg, session)])
    return SampleMarket(bars=bars, config=cfg, **_tables(cfg))


def write_sample_market(
    out_dir: str | Path, cfg: SampleConfig | None = None, session: Session = A_SHARE
) -> dict[str, Path]:
    """Write the sample market as a raw feed: one bar file per day plus the side tables.

    Returns the paths: `bars` (directory), `classification` (CSV), `adj_factors`, `stocks`,
    `signal` (parquet).
    """
    cfg = cfg or SampleConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = _tables(cfg)
    paths = {"bars": out / "bars", "classification": out / "classification.csv"}
    atomic_write_bytes(paths["classification"], tables["classification"].write_csv().encode())
    for name in [n for n in tables if n != "classification"]:
        paths[name] = out / f"{name}.parquet"
        atomic_write_parquet(tables[name], paths[name])
    publish_dir(out, "bars", lambda tmp: _write_day_files(tmp, cfg, session))
    return paths


def _write_day_files(folder: Path, cfg: SampleConfig, session: Session) -> None:
    for day, bars in iter_sample_days(cfg, session):
        bars.write_parquet(folder / f"{day:%Y%m%d}.parquet")


def publish_dir(parent: Path, name: str, fill) -> Path:
    """Fill a temporary folder and rename it to `parent/name` in one step: readers see no
    folder or a complete one (the side tables are written before it). When a concurrent writer
    published first, its folder is kept (it holds the same files) and ours is dropped."""
    import os
    import shutil

    target = parent / name
    remove_stale_temp_dirs(target)
    tmp = temp_dir_for(target)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
