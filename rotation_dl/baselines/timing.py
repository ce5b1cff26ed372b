"""Micro-cap index timing with the diffusion index (METHODOLOGY section 3).

Universe (`universe`): `smallest_cap`, the N smallest stocks by market cap each day (close x
free-float shares when given, else x shares outstanding); `smallest_amount`, the N stocks with
the lowest mean traded amount over the previous `amount_window` days (data up to the previous
close only: no look-ahead), the proxy when there are no share counts; `all`; or `list`, a given
constituent list. Reconstituted daily. DI_t is the share of constituents with close_t >
close_{t-20} (unsmoothed). The critical-point grid G_t(x, T) is the share with
x * close_t > close_{t-T}: "if every constituent sits at x times today's close N = 20 - T days
from now, what will DI be?". Three signal machines turn DI into a position (1 long, 0 flat):

* first threshold (left side):  long -> flat when DI > upper; flat -> long when DI < lower
* delayed threshold (right side): flat when DI falls through upper (prev > upper >= DI);
  long when it rises through lower (prev < lower <= DI)
* dual moving average:          long while MA_fast(DI) > MA_slow(DI)

A machine holds no position before its first defined signal (DI defined; both moving averages
for dual MA): its totals, drawdowns and time in market run over the signal's life, from that
start date, and so does the buy-and-hold it is compared with. Entering at the start is the
initial entry, reported on its own; trades count the switches after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Literal

import numpy as np
import polars as pl

from rotation_dl.backtest.metrics import max_drawdown
from rotation_dl.data.matrix import CloseMatrix, close_matrix
from rotation_dl.errors import ConfigError, DataError


def smallest(values: np.ndarray, n: int) -> np.ndarray:
    """[D, S] bool: per day, the n stocks with the smallest finite value (ties: first)."""
    c = np.where(np.isfinite(values), values, np.inf)
    order = np.argsort(c, axis=1, kind="stable")
    rank = np.empty_like(order)
    rows = np.arange(c.shape[0])[:, None]
    rank[rows, order] = np.arange(c.shape[1])[None, :]
    return (rank < n) & np.isfinite(c)


def trailing_amount(amount: np.ndarray, window: int) -> np.ndarray:
    """[D, S] mean traded amount over the `window` days before each day (day t uses t-window ..
    t-1 only); NaN with fewer than half the window traded."""
    a = np.where(np.isfinite(amount) & (amount > 0), amount, np.nan)
    csum = np.vstack([np.zeros((1, a.shape[1])), np.cumsum(np.nan_to_num(a), axis=0)])
    ccnt = np.vstack([np.zeros((1, a.shape[1])), np.cumsum(np.isfinite(a), axis=0)])
    t = np.arange(a.shape[0])
    lo = np.maximum(t - window, 0)
    s, n = csum[t] - csum[lo], ccnt[t] - ccnt[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= max(1, window // 2), s / n, np.nan)


def universe_mask(
    m: CloseMatrix,
    n_smallest: int | None = None,
    caps: np.ndarray | None = None,
    constituents: Sequence[str] | None = None,
    amounts: np.ndarray | None = None,
    amount_window: int = 20,
) -> np.ndarray:
    """[D, S] bool: each day's universe, reconstituted daily: a constituent list, the
    `n_smallest` by cap (`caps`), or by trailing traded amount (`amounts`), else every stock
    with a close."""
    has = np.isfinite(m.close)
    if constituents is not None:
        keep = np.isin(np.asarray(m.symbols), np.asarray(list(constituents)))
        return has & keep[None, :]
    if n_smallest is None:
        return has
    if caps is not None:
        return smallest(np.where(has, caps, np.nan), n_smallest)
    if amounts is not None:  # ranked on data up to the previous close; members need a close
        return smallest(trailing_amount(amounts, amount_window), n_smallest) & has
    return has


def universe_di(m: CloseMatrix, universe: np.ndarray, lag: int = 20) -> np.ndarray:
    """DI_t: share of universe members with close_t > close_{t-lag} (both closes known)."""
    prev = m.lagged(lag)
    ok = universe & np.isfinite(m.close) & np.isfinite(prev)
    n = ok.sum(axis=1)
    hits = (ok & (m.close > prev)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hits / n, np.nan)


def critical_grid(
    m: CloseMatrix,
    universe: np.ndarray,
    day: int,
    xs: Sequence[float] = tuple(np.round(np.arange(0.90, 1.1001, 0.01), 2)),
    lags: Sequence[int] = tuple(range(20, 9, -1)),
) -> pl.DataFrame:
    """G(x, T) on day index `day`: rows T (20..10, with N = 20 - T), columns x."""
    c = m.close[day]
    rows = []
    for T in lags:
        prev = m.close[day - T] if day - T >= 0 else np.full_like(c, np.nan)
        ok = universe[day] & np.isfinite(c) & np.isfinite(prev)
        n = max(int(ok.sum()), 1)
        rows.append([T, 20 - T] + [float((ok & (x * c > prev)).sum() / n) for x in xs])
    return pl.DataFrame(rows, schema=["T", "days_ahead"] + [f"x{x:.2f}" for x in xs], orient="row")


Machine = Literal["first_threshold", "delayed_threshold", "dual_ma"]
MACHINES: tuple[str, ...] = ("first_threshold", "delayed_threshold", "dual_ma")


@dataclass(frozen=True)
class SignalConfig:
    upper: float = 0.9
    lower: float = 0.1
    fast: int = 10
    slow: int = 20
    initial: int = 1  # the threshold machines' state on their first defined day


def signal_start(di: np.ndarray, machine: Machine, cfg: SignalConfig | None = None) -> int | None:
    """Index of a machine's first defined signal (None: never): the first finite DI, or for
    dual MA the first day both moving averages are defined."""
    cfg = cfg or SignalConfig()
    if machine == "dual_ma":
        fast, slow = _moving_averages(di, cfg)
        ok = np.isfinite(slow) & np.isfinite(fast)
    else:
        ok = np.isfinite(di)
    return int(np.argmax(ok)) if ok.any() else None


def _moving_averages(di: np.ndarray, cfg: SignalConfig) -> tuple[np.ndarray, np.ndarray]:
    """The dual-MA machine's fast and slow means of DI (NaN until their windows are full)."""
    s = pl.Series(di).fill_nan(None)
    fast = s.rolling_mean(cfg.fast, min_samples=cfg.fast).to_numpy()
    slow = s.rolling_mean(cfg.slow, min_samples=cfg.slow).to_numpy()
    return fast, slow


def signal_states(di: np.ndarray, machine: Machine, cfg: SignalConfig | None = None) -> np.ndarray:
    """Position after each day's close (1 long, 0 flat): flat before the machine's first
    defined signal; a NaN DI keeps the previous state."""
    cfg = cfg or SignalConfig()
    D = len(di)
    out = np.zeros(D, dtype=np.int8)
    start = signal_start(di, machine, cfg)
    if start is None:
        return out
    if machine == "dual_ma":
        fast, slow = _moving_averages(di, cfg)
        state = 0
        for t in range(start, D):  # a state machine: one step per day
            if np.isfinite(fast[t]) and np.isfinite(slow[t]):
                state = int(fast[t] > slow[t])
            out[t] = state
        return out
    state = cfg.initial
    for t in range(start, D):
        x = di[t]
        prev = di[t - 1] if t else np.nan
        if np.isfinite(x):
            if machine == "first_threshold":
                if state == 1 and x > cfg.upper:
                    state = 0
                elif state == 0 and x < cfg.lower:
                    state = 1
            elif machine == "delayed_threshold":
                # strict like the first threshold: flat when prev > upper >= DI, long when
                # prev < lower <= DI (a DI sitting exactly on a threshold has not crossed it)
                if np.isfinite(prev) and prev > cfg.upper >= x:
                    state = 0
                elif np.isfinite(prev) and prev < cfg.lower <= x:
                    state = 1
            else:
                raise ConfigError(f"unknown signal machine {machine!r}; choose from {MACHINES}")
        out[t] = state
    return out


def signal_log(
    dates: list[date], di: np.ndarray, states: np.ndarray, machine: str, start: int | None = None
) -> pl.DataFrame:
    """One row per switch after the signal's start: date, machine, state (1 long, 0 flat), di.
    The state taken on the start date is the initial entry, not a switch."""
    s = states.astype(int)
    change = np.nonzero(np.diff(s, prepend=s[0]))[0]
    if start is not None:
        change = change[change > start]
    return pl.DataFrame(
        {
            "date": [dates[i] for i in change],
            "machine": [machine] * len(change),
            "state": s[change],
            "di": di[change],
        },
        schema={"date": pl.Date, "machine": pl.String, "state": pl.Int64, "di": pl.Float64},
    )


@dataclass(frozen=True)
class TimingStats:
    """A machine's record over its signal's life (from `signal_start`): totals, drawdowns and
    time in market; `trades` counts switches, the entry on the start date is `initial_entry`."""

    machine: str
    signal_start: str | None
    initial_state: int
    total_return: float
    buy_hold_return: float
    annual_return: float
    annual_vol: float
    sharpe: float
    max_drawdown: float
    buy_hold_max_drawdown: float
    exposure: float  # time in market: share of the life's days held long
    trades: int  # switches after the start (the initial entry not counted)
    initial_entry: bool  # long from the start date

    def to_dict(self) -> dict:
        return asdict(self)


def universe_returns(m: CloseMatrix, universe: np.ndarray) -> np.ndarray:
    """Equal-weight close-to-close return of the universe held from t-1 to t (day-t members
    of t-1's universe; a stock without both closes is left out)."""
    prev = m.lagged(1)
    members = np.vstack([np.zeros((1, universe.shape[1]), bool), universe[:-1]])
    ok = members & np.isfinite(m.close) & np.isfinite(prev)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(ok, m.close / prev - 1, 0.0).sum(axis=1) / ok.sum(axis=1)
    return np.where(ok.sum(axis=1) > 0, r, 0.0)


def universe_open_split(
    m: CloseMatrix, opens: np.ndarray, universe: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Equal-weight overnight (open_t / close_{t-1} - 1) and intraday (close_t / open_t - 1)
    returns of day t-1's universe members that have all three prices."""
    prev = m.lagged(1)
    members = np.vstack([np.zeros((1, universe.shape[1]), bool), universe[:-1]])
    ok = members & np.isfinite(m.close) & np.isfinite(prev) & np.isfinite(opens)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        on = np.where(ok, opens / prev - 1, 0.0).sum(axis=1) / n
        intra = np.where(ok, m.close / opens - 1, 0.0).sum(axis=1) / n
    return np.where(n > 0, on, 0.0), np.where(n > 0, intra, 0.0)


def timing_backtest(
    dates: list[date],
    ret: np.ndarray,
    states: np.ndarray,
    machine: str,
    execution: Literal["close", "next_open"] = "close",
    periods_per_year: int = 252,
    overnight: np.ndarray | None = None,
    intraday: np.ndarray | None = None,
    start: int | None = 0,
) -> tuple[pl.DataFrame, TimingStats]:
    """Long the universe (or flat) by the state decided at each close.

    `close`: trade at the signal close, so the state at close t earns day t+1's close-to-close
    return. `next_open`: trade at the next open, so on day d the overnight gap is earned by the
    state of close d-2 (still held) and the session by the state of close d-1 (needs
    `overnight` and `intraday`, see `universe_open_split`). Statistics and both NAVs run over
    the signal's life: the days after `start` (None: the signal never starts).
    """
    pos = np.zeros_like(ret)
    pos[1:] = states[:-1]
    if execution == "close":
        strat = pos * ret
    elif execution == "next_open":
        if overnight is None or intraday is None:
            raise ConfigError("execution=next_open needs open prices in the daily bars")
        held_overnight = np.zeros_like(ret)
        held_overnight[2:] = states[:-2]
        strat = (1 + held_overnight * overnight) * (1 + pos * intraday) - 1
    else:
        raise ConfigError(f"unknown execution {execution!r}; use close or next_open")
    life = np.zeros(len(ret), dtype=bool)
    if start is not None:
        life[start + 1 :] = True  # the first day a position decided at the start can earn
    strat = np.where(life, strat, 0.0)
    nav = np.cumprod(1 + strat)
    bh = np.cumprod(1 + np.where(life, ret, 0.0))
    s_life, n = strat[life], int(life.sum())
    years = n / periods_per_year
    vol = float(np.std(s_life, ddof=1) * np.sqrt(periods_per_year)) if n > 1 else float("nan")
    ann = float(nav[-1] ** (1 / years) - 1) if n else float("nan")
    after = states[start:].astype(int) if start is not None else np.zeros(0, dtype=int)
    stats = TimingStats(
        machine=machine,
        signal_start=str(dates[start]) if start is not None else None,
        initial_state=int(after[0]) if len(after) else 0,
        total_return=float(nav[-1] - 1),
        buy_hold_return=float(bh[-1] - 1),
        annual_return=ann,
        annual_vol=vol,
        sharpe=float(np.mean(s_life) / np.std(s_life, ddof=1) * np.sqrt(periods_per_year))
        if n > 1 and np.std(s_life) > 0
        else float("nan"),
        max_drawdown=max_drawdown(nav[life]) if n else float("nan"),
        buy_hold_max_drawdown=max_drawdown(bh[life]) if n else float("nan"),
        exposure=float(pos[life].mean()) if n else float("nan"),
        trades=int(np.abs(np.diff(after)).sum()) if len(after) else 0,
        initial_entry=bool(len(after) and after[0] == 1),
    )
    frame = pl.DataFrame(
        {
            "date": dates,
            "universe_ret": ret,
            "position": pos,
            "strategy_ret": strat,
            "strategy_nav": nav,
            "buy_hold_nav": bh,
        },
        schema_overrides={"date": pl.Date},
    )
    return frame, stats


def caps_matrix(m: CloseMatrix, shares: pl.DataFrame | None) -> np.ndarray | None:
    """Market caps [D, S] = close x free-float shares (`free_float_shares`) when the table has
    them, else x shares outstanding (symbol, shares_outstanding)."""
    if shares is None:
        return None
    col = "free_float_shares" if "free_float_shares" in shares.columns else "shares_outstanding"
    if col not in shares.columns:
        raise DataError(
            "a shares table needs shares_outstanding or free_float_shares",
            file="shares",
            column="shares_outstanding",
        )
    s = dict(zip(shares["symbol"].to_list(), shares[col].to_list(), strict=True))
    vec = np.array([s.get(sym, np.nan) for sym in m.symbols], dtype=float)
    if np.isnan(vec).all():
        raise DataError(
            "no symbol of the bars has shares outstanding",
            file="shares",
            column="shares_outstanding",
            count=len(m.symbols),
        )
    return m.close * vec[None, :]


Universe = Literal["auto", "smallest_cap", "smallest_amount", "all", "list"]


def resolve_universe(
    universe: Universe, shares: pl.DataFrame | None, constituents: Sequence[str] | None
) -> str:
    """`auto`: a given list, else the smallest by cap when share counts are given, else the
    smallest by traded amount; an explicit choice is checked against what it needs."""
    if universe == "auto":
        if constituents is not None:
            return "list"
        return "smallest_cap" if shares is not None else "smallest_amount"
    if universe == "smallest_cap" and shares is None:
        raise ConfigError(
            "timing.universe=smallest_cap needs share counts (timing.shares: symbol, "
            "shares_outstanding or free_float_shares); without them use smallest_amount"
        )
    if universe == "list" and constituents is None:
        raise ConfigError("timing.universe=list needs timing.constituents (a symbol file)")
    return universe


def run_timing(
    daily: pl.DataFrame | pl.LazyFrame,
    *,
    universe: Universe = "auto",
    universe_size: int = 400,
    amount_window: int = 20,
    shares: pl.DataFrame | None = None,
    constituents: Sequence[str] | None = None,
    lag: int = 20,
    cfg: SignalConfig | None = None,
    execution: Literal["close", "next_open"] = "close",
) -> dict:
    """DI, grid (last day), signal states, switch log and a timing backtest per machine, on
    the universe `universe` names (see `resolve_universe`)."""
    from rotation_dl.data.matrix import aligned_matrix

    cfg = cfg or SignalConfig()
    m = close_matrix(daily)
    kind = resolve_universe(universe, shares, constituents)
    if kind == "list":
        uni = universe_mask(m, constituents=constituents)
        label = f"given constituents ({len(list(constituents or []))})"
    elif kind == "smallest_cap":
        uni = universe_mask(m, universe_size, caps=caps_matrix(m, shares))
        label = f"{universe_size} smallest by market cap"
    elif kind == "smallest_amount":
        uni = universe_mask(
            m, universe_size, amounts=aligned_matrix(daily, m, "amount"),
            amount_window=amount_window,
        )  # fmt: skip
        label = f"{universe_size} smallest by {amount_window}-day mean traded amount"
    else:
        uni = universe_mask(m)
        label = "all stocks"
    di = universe_di(m, uni, lag)
    ret = universe_returns(m, uni)
    split = (None, None)
    if execution == "next_open":
        split = universe_open_split(m, aligned_matrix(daily, m, "open"), uni)
    states, logs, stats, curves = {}, [], [], []
    for machine in MACHINES:
        start = signal_start(di, machine, cfg)
        st = signal_states(di, machine, cfg)
        states[machine] = st
        logs.append(signal_log(m.dates, di, st, machine, start))
        frame, s = timing_backtest(
            m.dates, ret, st, machine, execution, overnight=split[0], intraday=split[1],
            start=start,
        )  # fmt: skip
        stats.append(s.to_dict())
        curves.append(frame.with_columns(pl.lit(machine).alias("machine")))
    series = pl.DataFrame(
        {
            "date": m.dates,
            "di": di,
            "universe_size": uni.sum(axis=1),
            **{f"state_{k}": v.astype(int) for k, v in states.items()},
        },
        schema_overrides={"date": pl.Date},
    ).with_columns(pl.col("di").fill_nan(None))
    return {
        "series": series,
        "grid": critical_grid(m, uni, len(m.dates) - 1),
        "signals": pl.concat(logs),
        "curves": pl.concat(curves),
        "stats": stats,
        "universe": label,
    }
