"""The backtest engine: factor panel + industry daily returns -> holdings, returns, turnover.

Timing (METHODOLOGY section 0): scores dated t are known at the close of t; holdings chosen at
rebalance date t are held from that close to the next rebalance close, so they earn the returns
of days t+1 .. t_next. Weights are equal at each rebalance and drift with returns in between.
The benchmark is the equal-weight mean of all industries' daily returns (rebalanced daily).
Costs: `cost_rate` x turnover, charged on the first day of the new holding period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import polars as pl

from rotation_dl.backtest.schedule import Schedule, rebalance_dates
from rotation_dl.backtest.selection import SelectionRule, run_selection
from rotation_dl.errors import DataError


@dataclass
class BacktestResult:
    """daily: date, port_ret, bench_ret, excess_ret, port_nav, bench_nav, excess_nav, turnover,
    cost. holdings: rebalance date, industry, weight. rebalances: date, n_in, n_out, turnover,
    entered, exited."""

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
) -> BacktestResult:
    """Backtest a (date, industry, score) panel against (date, industry, ret) daily returns.

    Args:
        factors: scores; only rows dated on rebalance dates matter.
        returns: industry daily returns on the trading calendar (close-to-close).
        rule: selection (top-k, buffer, swap cap, exclusions).
        schedule: weekly | monthly | daily | every_n | dates.
        cost_rate: proportional cost per unit of turnover.
        start, end: restrict the calendar (defaults: first/last scored date .. last return).
    """
    rule = rule or SelectionRule()
    cal, inds, R = returns_matrix(returns)
    if not cal:
        raise DataError("no industry returns to backtest against", file="returns", count=0)
    scored = factors.select("date", "industry", pl.col(factor_col).alias("score"))
    first_scored = scored.filter(pl.col("score").is_not_null())["date"].min()
    if first_scored is None:
        raise DataError("factor panel has no scores", file="factors", column=factor_col, count=0)
    lo = max(start or first_scored, first_scored)
    cal_arr = np.asarray(cal, dtype="datetime64[D]")
    in_range = (cal_arr >= np.datetime64(lo)) & (cal_arr <= np.datetime64(end or cal[-1]))
    cal_dates = [d for d, ok in zip(cal, in_range, strict=True) if ok]
    rebal = [
        d
        for d in rebalance_dates(cal_dates, schedule, every_n, dates)
        if d in set(scored["date"].to_list())
    ]
    if not rebal:
        raise DataError("no rebalance date has scores", file="factors", column="date", count=0)
    by_date = scored.filter(pl.col("date").is_in(rebal)).partition_by("date", as_dict=True)
    score_maps = [
        dict(zip(by_date[(d,)]["industry"], by_date[(d,)]["score"], strict=True)) for d in rebal
    ]
    holdings = run_selection(rebal, score_maps, rule)
    return _simulate(
        cal,
        inds,
        R,
        rebal,
        holdings,
        cost_rate,
        config={
            "k": rule.k,
            "buffer": rule.buffer,
            "max_swaps": rule.max_swaps,
            "exclude": list(rule.exclude),
            "schedule": schedule,
            "every_n": every_n,
            "cost_rate": cost_rate,
        },
    )


def _simulate(
    cal: list[date],
    inds: list[str],
    R: np.ndarray,
    rebal: list[date],
    holdings: list[list[str]],
    cost_rate: float,
    config: dict,
) -> BacktestResult:
    """Drifting equal weights between rebalances; vectorised within each holding period."""
    col = {ind: j for j, ind in enumerate(inds)}
    pos = {d: i for i, d in enumerate(cal)}
    D, N = R.shape
    Rz = np.nan_to_num(R, nan=0.0)  # a missing return is a flat day for a held industry
    port = np.full(D, np.nan)
    turnover = np.zeros(D)  # on the first day of each holding period
    cost = np.zeros(D)
    w_prev = np.zeros(N)
    rows_h, rows_r = [], []
    for k, (d, held) in enumerate(zip(rebal, holdings, strict=True)):
        i0 = pos[d]
        i1 = pos[rebal[k + 1]] if k + 1 < len(rebal) else D - 1
        w = np.zeros(N)
        if held:
            w[[col[h] for h in held]] = 1.0 / len(held)
        traded = float(np.abs(w - w_prev).sum())
        prev_set = {inds[j] for j in np.nonzero(w_prev)[0]}
        rows_r.append(
            (
                d,
                len(set(held) - prev_set),
                len(prev_set - set(held)),
                traded,
                sorted(set(held) - prev_set),
                sorted(prev_set - set(held)),
            )
        )
        rows_h += [(d, h, 1.0 / len(held)) for h in held]
        if i1 > i0:
            growth = np.cumprod(1 + Rz[i0 + 1 : i1 + 1], axis=0)  # [T, N]
            value = growth @ w  # portfolio value relative to the rebalance close
            prev_value = np.concatenate([[1.0], value[:-1]])
            port[i0 + 1 : i1 + 1] = value / prev_value - 1
            turnover[i0 + 1] = traded
            cost[i0 + 1] = cost_rate * traded
            port[i0 + 1] -= cost[i0 + 1]
            w_end = growth[-1] * w
            w_prev = w_end / w_end.sum() if w_end.sum() > 0 else w_end
        else:
            w_prev = w
    start = pos[rebal[0]]
    with np.errstate(invalid="ignore"):
        bench = np.nanmean(R, axis=1)
    sl = slice(start + 1, D)
    daily = pl.DataFrame(
        {
            "date": cal[sl],
            "port_ret": port[sl],
            "bench_ret": bench[sl],
            "turnover": turnover[sl],
            "cost": cost[sl],
        }
    ).with_columns(pl.col("date").cast(pl.Date))
    daily = daily.with_columns(
        (pl.col("port_ret") - pl.col("bench_ret")).alias("excess_ret"),
        (1 + pl.col("port_ret")).cum_prod().alias("port_nav"),
        (1 + pl.col("bench_ret")).cum_prod().alias("bench_nav"),
    ).with_columns((pl.col("port_nav") / pl.col("bench_nav")).alias("excess_nav"))
    hold = pl.DataFrame(
        rows_h, schema={"date": pl.Date, "industry": pl.String, "weight": pl.Float64}, orient="row"
    )
    reb = pl.DataFrame(
        rows_r,
        schema={
            "date": pl.Date,
            "n_in": pl.Int64,
            "n_out": pl.Int64,
            "turnover": pl.Float64,
            "entered": pl.List(pl.String),
            "exited": pl.List(pl.String),
        },
        orient="row",
    )
    return BacktestResult(daily, hold, reb, config)


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
    without a close on either day, or with zero volume, are left out of that day's mean.
    """
    from rotation_dl.data.industry import map_industries

    lf = daily_bars.lazy()
    cal = lf.select(pl.col("date").unique().sort()).collect()["date"]
    idx = pl.DataFrame({"date": cal, "_i": np.arange(len(cal))})
    bars = lf.join(idx.lazy(), on="date").select(
        "symbol", "date", "_i", "close", "volume", *(["amount"] if weighting == "amount" else [])
    )
    # previous close on the market calendar: the stock's prior row, if it is exactly day t-1
    prior = pl.col("_i").shift(1).over("symbol") == pl.col("_i") - 1
    r = (
        bars.sort("symbol", "_i")
        .with_columns(pl.when(prior).then(pl.col("close").shift(1).over("symbol")).alias("_pc"))
        .filter((pl.col("volume") > 0) & (pl.col("_pc") > 0))
        .with_columns((pl.col("close") / pl.col("_pc") - 1).alias("ret"))
        .collect()
    )
    r = map_industries(r.lazy(), classification, on_unmapped="drop")
    mean = (
        (pl.col("ret") * pl.col("amount")).sum() / pl.col("amount").sum()
        if weighting == "amount"
        else pl.col("ret").mean()
    )
    return r.group_by("date", "industry").agg(mean.alias("ret")).sort("date", "industry").collect()
