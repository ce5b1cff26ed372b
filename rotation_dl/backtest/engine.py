"""The backtest engine: factor panel + industry daily returns -> holdings, returns, turnover.

Timing (METHODOLOGY section 0): scores dated t are known at the close of t; holdings chosen at
rebalance date t are held from that close to the next rebalance close, so they earn the returns
of days t+1 .. t_next. Weights are equal at each rebalance and drift with returns in between.
The benchmark is the equal-weight mean of all industries' daily returns (rebalanced daily).
Costs (`costs.CostModel`: commission, transfer fee, stamp duty on sells by the trade date,
slippage) are charged on the first day of the new holding period.
Turnover is averaged over **held** rebalances after the first formation: a formation on the
last data date is never held (no day follows it), so it is reported as the next holdings, not
as traded (`rebalances.held`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date

import numpy as np
import polars as pl

from rotation_dl.backtest.costs import BPS, CostModel, uniform
from rotation_dl.backtest.schedule import Schedule, rebalance_dates
from rotation_dl.backtest.selection import SelectionRule, rank_orders, select_indices
from rotation_dl.errors import DataError


@dataclass
class BacktestResult:
    """daily: date, port_ret (after costs), bench_ret, excess_ret, port_nav, bench_nav,
    excess_nav, turnover, cost, port_ret_gross (before costs). holdings: rebalance date,
    industry, weight. rebalances: date, n_in, n_out, turnover,
    held (False for a formation on the last data date: the next holdings), entered, exited."""

    daily: pl.DataFrame
    holdings: pl.DataFrame
    rebalances: pl.DataFrame
    config: dict = field(default_factory=dict)


def returns_matrix(
    returns: pl.DataFrame, industries: Sequence[str] | None = None
) -> tuple[list[date], list[str], np.ndarray]:
    """(date, industry, ret) -> dates, industries, R [D, N] (NaN where missing)."""
    inds = sorted(industries or returns["industry"].unique().to_list())
    wide = returns.pivot(on="industry", index="date", values="ret").sort("date")
    for ind in inds:
        if ind not in wide.columns:
            wide = wide.with_columns(pl.lit(None, dtype=pl.Float64).alias(ind))
    return wide["date"].to_list(), inds, wide.select(inds).to_numpy().astype(np.float64)


@dataclass
class PreparedPanel:
    """Scores and returns aligned on one calendar, with per-date rank orders (built once)."""

    cal: list[date]
    inds: list[str]
    R: np.ndarray  # [D, N] daily returns (NaN missing)
    S: np.ndarray  # [D, N] scores (NaN missing)
    order: np.ndarray  # [D, N] industry indices best first
    ranks: np.ndarray  # [D, N] 1-based ranks
    first: int  # first calendar index with any score


def prepare(
    factors: pl.DataFrame, returns: pl.DataFrame, factor_col: str = "score"
) -> PreparedPanel:
    """Align a factor panel and industry returns on the returns' calendar."""
    cal, inds, R = returns_matrix(returns)
    if not cal:
        raise DataError("no industry returns to backtest against", file="returns", count=0)
    scored = factors.select("date", "industry", pl.col(factor_col).cast(pl.Float64).alias("s"))
    scored = scored.filter(
        pl.col("industry").is_in(inds) & pl.col("s").is_not_null() & pl.col("s").is_not_nan()
    )
    if scored.is_empty():
        raise DataError("factor panel has no scores", file="factors", column=factor_col, count=0)
    pos = {d: i for i, d in enumerate(cal)}
    col = {n: j for j, n in enumerate(inds)}
    scored = scored.filter(pl.col("date").is_in(cal))
    S = np.full(R.shape, np.nan)
    di = np.array([pos[d] for d in scored["date"].to_list()], dtype=np.int64)
    ni = np.array([col[n] for n in scored["industry"].to_list()], dtype=np.int64)
    S[di, ni] = scored["s"].to_numpy()
    order, ranks = rank_orders(S, inds)
    has = np.isfinite(S).any(axis=1)
    return PreparedPanel(cal, inds, R, S, order, ranks, int(np.argmax(has)) if has.any() else 0)


def _rebalance_index(
    prep: PreparedPanel,
    schedule: Schedule,
    every_n: int,
    dates: Sequence[date] | None,
    start: date | None,
    end: date | None,
) -> list[int]:
    lo = max(
        prep.first,
        prep.cal.index(start)
        if start in prep.cal
        else (
            int(np.searchsorted(np.asarray(prep.cal, dtype="datetime64[D]"), np.datetime64(start)))
            if start
            else 0
        ),
    )
    hi = (
        len(prep.cal) - 1
        if end is None
        else int(
            np.searchsorted(
                np.asarray(prep.cal, dtype="datetime64[D]"), np.datetime64(end), "right"
            )
        )
        - 1
    )
    window = prep.cal[lo : hi + 1]
    pos = {d: i for i, d in enumerate(prep.cal)}
    has = np.isfinite(prep.S).any(axis=1)
    idx = [pos[d] for d in rebalance_dates(window, schedule, every_n, dates)]
    idx = [i for i in idx if has[i]]
    if not idx:
        raise DataError("no rebalance date has scores", file="factors", column="date", count=0)
    return idx


def _select_path(prep: PreparedPanel, rebal: list[int], rule: SelectionRule) -> list[list[int]]:
    excluded = frozenset(prep.inds.index(e) for e in rule.exclude if e in prep.inds)
    held: list[int] = []
    path = []
    for i in rebal:
        held = select_indices(
            prep.order[i], prep.ranks[i], np.isfinite(prep.S[i]), held, rule, excluded
        )
        path.append(held)
    return path


def _simulate_arrays(
    R: np.ndarray,
    rebal: list[int],
    holdings: list[list[int]],
    costs: CostModel | float,
    cal: Sequence[date] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float], np.ndarray]:
    """Daily portfolio returns after costs with drifting equal weights; turnover and cost on the
    first day of each holding period; turnover per rebalance; daily returns before costs.

    Vectorised over holding periods with growth indices G (cumulative products of 1 + r): a
    portfolio bought with weights w at the close of t_k is worth sum_j w_j G_j(t) / G_j(t_k) at
    t, so every day's value is one row of (weights / G at the period start) times G. The cost
    of a rebalance (`costs.CostModel`: buys and sells, stamp duty by the trade date) is charged
    on the first day it is held; a float is one rate per unit traded.
    """
    costs = uniform(costs) if isinstance(costs, int | float) else costs
    D, N = R.shape
    K = len(rebal)
    growth = np.cumprod(1 + np.nan_to_num(R, nan=0.0), axis=0)  # a missing return: flat day
    idx = np.asarray(rebal)
    W = np.zeros((K, N))
    for k, held in enumerate(holdings):
        if held:
            W[k, held] = 1.0 / len(held)
    # drifted weights at each next rebalance close -> turnover
    ends = np.append(idx[1:], D - 1)
    drift = W * growth[ends] / growth[idx]
    sums = drift.sum(axis=1, keepdims=True)
    drift = np.divide(drift, sums, out=np.zeros_like(drift), where=sums > 0)
    prev = np.vstack([np.zeros((1, N)), drift[:-1]])
    change = W - prev
    buys, sells = np.clip(change, 0, None).sum(axis=1), np.clip(-change, 0, None).sum(axis=1)
    traded = buys + sells
    # day t (after the first rebalance) belongs to the period of the last rebalance before t
    days = np.arange(D)
    period = np.searchsorted(idx, days, side="left") - 1  # rebalance strictly before t
    live = period >= 0
    p = period[live]
    value = np.einsum("tn,tn->t", W[p] / growth[idx[p]], growth[days[live]])
    value = np.where(W[p].sum(axis=1) > 0, value, 1.0)  # nothing held: cash
    first = days[live] == idx[p] + 1
    prev_value = np.where(first, 1.0, np.concatenate([[1.0], value[:-1]]))
    gross = np.full(D, np.nan)
    gross[live] = value / prev_value - 1
    turnover = np.zeros(D)
    cost = np.zeros(D)
    starts = idx + 1
    ok = starts < D
    turnover[starts[ok]] = traded[ok]
    if not costs.is_free():
        trade_days = [cal[i] for i in idx] if cal is not None else [date(2000, 1, 1)] * K
        cost[starts[ok]] = costs.cost(buys, sells, trade_days)[ok]
    return gross - cost, turnover, cost, traded.tolist(), gross


def held_mask(rebal: Sequence[int], n_days: int) -> np.ndarray:
    """Which formations are held for at least one day (the last data date's is not)."""
    return np.asarray(rebal) + 1 < n_days


def mean_held_turnover(traded: Sequence[float], held: Sequence[bool]) -> float:
    """Mean turnover over held rebalances after the initial formation (0.0 without any)."""
    t = np.asarray(traded, dtype=float)[1:][np.asarray(held, dtype=bool)[1:]]
    return float(t.mean()) if len(t) else 0.0


def equal_weight_benchmark(R: np.ndarray) -> np.ndarray:
    """Mean of the industries' returns each day (rebalanced daily); NaN on empty days."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(R, axis=1)


def run_backtest(
    factors: pl.DataFrame,
    returns: pl.DataFrame,
    *,
    rule: SelectionRule | None = None,
    schedule: Schedule = "weekly",
    every_n: int = 5,
    dates: Sequence[date] | None = None,
    cost_rate: float = 0.0,
    factor_col: str = "score",
    start: date | None = None,
    end: date | None = None,
    prepared: PreparedPanel | None = None,
    costs: CostModel | None = None,
) -> BacktestResult:
    """Backtest a (date, industry, score) panel against (date, industry, ret) daily returns.

    Args:
        factors: scores; only rows dated on rebalance dates matter.
        returns: industry daily returns on the trading calendar (close-to-close).
        rule: selection (top-k, buffer, swap cap, exclusions).
        schedule: weekly | monthly | daily | every_n | dates.
        cost_rate: proportional cost per unit of turnover (added to `costs`' slippage).
        costs: commission, transfer fee, stamp duty and slippage (`costs.CostModel`).
        start, end: restrict the calendar (defaults: first scored date .. last return).
        prepared: reuse an aligned panel from `prepare` (sweeps).
    """
    rule = rule or SelectionRule()
    prep = prepared or prepare(factors, returns, factor_col)
    rebal = _rebalance_index(prep, schedule, every_n, dates, start, end)
    holdings = _select_path(prep, rebal, rule)
    model = costs or CostModel()
    if cost_rate:
        model = replace(model, slippage_bps=model.slippage_bps + cost_rate / BPS)
    port, turnover, cost, traded, gross = _simulate_arrays(
        prep.R, rebal, holdings, model, prep.cal
    )
    config = {
        "k": rule.k,
        "buffer": rule.buffer,
        "max_swaps": rule.max_swaps,
        "exclude": list(rule.exclude),
        "schedule": schedule,
        "every_n": every_n,
        "cost_rate": cost_rate,
        "costs": model.describe(),
    }
    return _frames(prep, rebal, holdings, port, turnover, cost, traded, config, gross)


def _frames(
    prep, rebal, holdings, port, turnover, cost, traded, config, gross=None
) -> BacktestResult:
    cal, inds = prep.cal, prep.inds
    start = rebal[0]
    bench = equal_weight_benchmark(prep.R)
    sl = slice(start + 1, len(cal))
    daily = (
        pl.DataFrame(
            {
                "date": pl.Series(cal[sl], dtype=pl.Date),
                "port_ret": port[sl],
                "bench_ret": bench[sl],
                "turnover": turnover[sl],
                "cost": cost[sl],
                "port_ret_gross": (gross if gross is not None else port + cost)[sl],
            }
        )
        .with_columns(
            (pl.col("port_ret") - pl.col("bench_ret")).alias("excess_ret"),
            (1 + pl.col("port_ret")).cum_prod().alias("port_nav"),
            (1 + pl.col("bench_ret")).cum_prod().alias("bench_nav"),
        )
        .with_columns((pl.col("port_nav") / pl.col("bench_nav")).alias("excess_nav"))
    )
    h_dates, h_inds, h_w = [], [], []
    entered, exited, prev = [], [], set()
    for i, held in zip(rebal, holdings, strict=True):
        names = [inds[j] for j in held]
        h_dates += [cal[i]] * len(names)
        h_inds += names
        h_w += [1.0 / len(names)] * len(names) if names else []
        cur = set(names)
        entered.append(sorted(cur - prev))
        exited.append(sorted(prev - cur))
        prev = cur
    hold = pl.DataFrame(
        {"date": pl.Series(h_dates, dtype=pl.Date), "industry": h_inds, "weight": h_w},
        schema_overrides={"industry": pl.String, "weight": pl.Float64},
    )
    reb = pl.DataFrame(
        {
            "date": pl.Series([cal[i] for i in rebal], dtype=pl.Date),
            "n_in": [len(e) for e in entered],
            "n_out": [len(x) for x in exited],
            "turnover": traded,
            "held": held_mask(rebal, len(cal)),
            "entered": pl.Series(entered, dtype=pl.List(pl.String)),
            "exited": pl.Series(exited, dtype=pl.List(pl.String)),
        }
    )
    return BacktestResult(daily, hold, reb, config)


def run_backtest_grid(
    factors: pl.DataFrame,
    returns: pl.DataFrame,
    configs: Sequence[dict],
    *,
    factor_col: str = "score",
    periods_per_year: int = 252,
) -> tuple[pl.DataFrame, np.ndarray]:
    """Backtest many configurations on one prepared panel.

    Each config is a dict of k, buffer, max_swaps, exclude, schedule, every_n, cost_rate.
    Returns (one summary row per config, NAV matrix [days, configs] over the calendar, NaN
    before each config's first holding period).
    """
    prep = prepare(factors, returns, factor_col)
    bench = equal_weight_benchmark(prep.R)
    navs = np.full((len(prep.cal), len(configs)), np.nan)
    rows = []
    for c, cfg in enumerate(configs):
        rule = SelectionRule(
            k=cfg.get("k", 6),
            buffer=cfg.get("buffer"),
            max_swaps=cfg.get("max_swaps"),
            exclude=tuple(cfg.get("exclude", ())),
        )
        rebal = _rebalance_index(
            prep,
            cfg.get("schedule", "weekly"),
            cfg.get("every_n", 5),
            cfg.get("dates"),
            None,
            None,
        )
        hold = _select_path(prep, rebal, rule)
        port, _, _, traded, _ = _simulate_arrays(
            prep.R, rebal, hold, cfg.get("costs") or cfg.get("cost_rate", 0.0), prep.cal
        )
        p = port[rebal[0] + 1 :]
        b = bench[rebal[0] + 1 :]
        nav = np.cumprod(1 + p)
        navs[rebal[0] + 1 :, c] = nav
        ex = p - b
        te = np.std(ex, ddof=1) * np.sqrt(periods_per_year) if len(ex) > 1 else np.nan
        rows.append(
            {
                **{k: cfg.get(k) for k in ("k", "buffer", "max_swaps", "schedule", "every_n")},
                "excess_compounded": float(nav[-1] / np.prod(1 + b) - 1) if len(p) else np.nan,
                "excess_summed": float(ex.sum()),
                "information_ratio": float(ex.mean() * periods_per_year / te) if te else np.nan,
                "mean_turnover": mean_held_turnover(traded, held_mask(rebal, len(prep.cal))),
            }
        )
    return pl.DataFrame(rows), navs


def industry_daily_returns(industry_bars: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """(date, industry, ret) close-to-close from industry bars' return index."""
    return (
        industry_bars.lazy()
        .group_by("industry", "date")
        .agg(pl.col("close").sort_by("ts").last())
        .sort("industry", "date")
        .with_columns(
            (pl.col("close") / pl.col("close").shift(1).over("industry") - 1).alias("ret")
        )
        .drop_nulls("ret")
        .select("date", "industry", "ret")
        .collect()
    )


def constituent_daily_returns(
    daily_bars: pl.DataFrame | pl.LazyFrame,
    classification: pl.DataFrame,
    weighting: str = "equal",
) -> pl.DataFrame:
    """(date, industry, ret): mean of constituents' adjusted close-to-close returns.

    A stock's return on day t uses its previous close on the market calendar (t-1); stocks
    without a close on either day, or with zero volume on t, are left out of that day's mean.
    Computed on dense [day, stock] matrices, so memory is a few such arrays, not a sort of
    every row.
    """
    from rotation_dl.data.matrix import (
        aligned_matrix,
        close_matrix,
        industry_mean,
        membership,
    )

    lf = daily_bars.lazy()
    m = close_matrix(lf.select("symbol", "date", "close"))  # zero-volume closes count as prev
    c = m.close
    prev = np.vstack([np.full((1, c.shape[1]), np.nan), c[:-1]])
    traded = aligned_matrix(lf, m, "volume") > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        ret = np.where(traded & (prev > 0), c / prev - 1, np.nan)
    industries, member = membership(m, classification)
    n = len(industries)
    if weighting == "amount":
        amount = aligned_matrix(lf, m, "amount")
        amount = np.where(np.isfinite(ret), amount, np.nan)
        num, counts = industry_mean(ret * amount, member, n)
        den, _ = industry_mean(amount, member, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = num / den
    else:
        mean, counts = industry_mean(ret, member, n)
    D = len(m.dates)
    return (
        pl.DataFrame(
            {
                "date": np.repeat(np.asarray(m.dates, dtype="datetime64[D]"), n),
                "industry": np.tile(np.asarray(industries, dtype=object), D),
                "ret": mean.reshape(-1),
                "_n": counts.reshape(-1),
            }
        )
        .filter(pl.col("_n") > 0)
        .select(pl.col("date").cast(pl.Date), pl.col("industry").cast(pl.String), "ret")
        .sort("date", "industry")
    )
