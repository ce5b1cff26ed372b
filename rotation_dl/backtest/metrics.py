"""Performance metrics (METHODOLOGY section 5): one implementation used by every model.

Excess is reported in named conventions, never one unlabelled number:

* total, **geometric** (`excess_compounded`) = portfolio NAV / benchmark NAV - 1 over the span;
* total, **arithmetic** (`excess_total_arithmetic`) = portfolio total return - benchmark total
  return;
* **summed** (`excess_summed`) = the sum of daily (portfolio - benchmark) returns;
* annualised, **geometric** (`annual_excess`, a ratio) = (1 + a) / (1 + b) - 1 of the
  annualised portfolio and benchmark returns a and b;
* annualised, **arithmetic** (`annual_excess_arithmetic`, a difference) = a - b.

Turnover (`mean_turnover`) is the mean over held rebalances after the initial formation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import date

import numpy as np
import polars as pl

from rotation_dl.backtest.costs import break_even_bps
from rotation_dl.backtest.engine import BacktestResult
from rotation_dl.backtest.ic import ic_series, summarize_ic
from rotation_dl.backtest.selection import tie_round
from rotation_dl.features.labels import forward_excess_from_returns

TRADING_DAYS = 252


@dataclass(frozen=True)
class PerformanceSummary:
    start: str
    end: str
    days: int
    total_return: float
    benchmark_return: float
    excess_compounded: float
    excess_total_arithmetic: float
    excess_summed: float
    annual_return: float
    annual_benchmark: float
    annual_excess: float
    annual_excess_arithmetic: float
    annual_vol: float
    tracking_error: float
    information_ratio: float
    max_drawdown_excess: float
    max_drawdown: float
    hit_rate: float
    mean_turnover: float

    def to_dict(self) -> dict:
        return asdict(self)


def max_drawdown(nav: np.ndarray) -> float:
    """Largest peak-to-trough fall of a NAV series (<= 0)."""
    if len(nav) == 0:
        return float("nan")
    peak = np.maximum.accumulate(np.concatenate([[1.0], nav]))[1:]
    return float(np.min(nav / peak - 1))


def span_excess(port: pl.Series, bench: pl.Series) -> tuple[float, float, float, float]:
    """(portfolio return, benchmark return, compounded excess, summed excess) over a span."""
    p = float((1 + port).product() - 1) if port.len() else 0.0
    b = float((1 + bench).product() - 1) if bench.len() else 0.0
    return p, b, (1 + p) / (1 + b) - 1, float((port - bench).sum())


def summarize_performance(
    daily: pl.DataFrame, periods_per_year: int = TRADING_DAYS, rebalance_turnover=None
) -> PerformanceSummary:
    """Summary of a backtest's daily frame (port_ret, bench_ret, date)."""
    d = daily.drop_nulls("port_ret")
    n = d.height
    port, bench = d["port_ret"], d["bench_ret"]
    p, b, exc_c, exc_s = span_excess(port, bench)
    years = n / periods_per_year if n else float("nan")
    ann = (1 + p) ** (1 / years) - 1 if n else float("nan")
    ann_b = (1 + b) ** (1 / years) - 1 if n else float("nan")
    ex = (port - bench).to_numpy()
    te = float(np.std(ex, ddof=1) * math.sqrt(periods_per_year)) if n > 1 else float("nan")
    ir = float(np.mean(ex) * periods_per_year / te) if te and te > 0 else float("nan")
    vol = (
        float(np.std(port.to_numpy(), ddof=1) * math.sqrt(periods_per_year))
        if n > 1
        else float("nan")
    )
    nav = np.cumprod(1 + port.to_numpy())
    enav = nav / np.cumprod(1 + bench.to_numpy())
    if rebalance_turnover is not None:
        turn = rebalance_turnover
    elif "turnover" in d.columns:
        turn = d["turnover"].filter(d["turnover"] > 0)
    else:
        turn = pl.Series([], dtype=pl.Float64)
    return PerformanceSummary(
        start=str(d["date"].min()),
        end=str(d["date"].max()),
        days=n,
        total_return=p,
        benchmark_return=b,
        excess_compounded=exc_c,
        excess_total_arithmetic=p - b,
        excess_summed=exc_s,
        annual_return=ann,
        annual_benchmark=ann_b,
        annual_excess=(1 + ann) / (1 + ann_b) - 1,
        annual_excess_arithmetic=ann - ann_b,
        annual_vol=vol,
        tracking_error=te,
        information_ratio=ir,
        max_drawdown_excess=max_drawdown(enav),
        max_drawdown=max_drawdown(nav),
        hit_rate=float(np.mean(ex > 0)) if n else float("nan"),
        mean_turnover=float(turn.mean()) if turn.len() else 0.0,
    )


def period_table(daily: pl.DataFrame, every: str = "1y") -> pl.DataFrame:
    """Per calendar period (`1y`, `1mo`, `1w`): portfolio, benchmark, compounded and summed
    excess, and the number of days."""
    key = pl.col("date").dt.truncate(every).alias("period")
    return (
        daily.drop_nulls("port_ret")
        .group_by(key)
        .agg(
            ((1 + pl.col("port_ret")).product() - 1).alias("portfolio"),
            ((1 + pl.col("bench_ret")).product() - 1).alias("benchmark"),
            (pl.col("port_ret") - pl.col("bench_ret")).sum().alias("excess_summed"),
            pl.len().alias("days"),
        )
        .with_columns(
            ((1 + pl.col("portfolio")) / (1 + pl.col("benchmark")) - 1).alias("excess_compounded")
        )
        .sort("period")
        .select("period", "portfolio", "benchmark", "excess_compounded", "excess_summed", "days")
    )


def calendar_year_table(daily: pl.DataFrame) -> pl.DataFrame:
    """Calendar-year table with a `year` column."""
    return (
        period_table(daily, "1y")
        .with_columns(pl.col("period").dt.year().alias("year"))
        .drop("period")
        .select("year", pl.exclude("year"))
    )


def to_date_excess(daily: pl.DataFrame, asof: date | None = None) -> dict[str, dict[str, float]]:
    """Week, month-to-date and year-to-date figures as of `asof` (default: the last date)."""
    d = daily.drop_nulls("port_ret")
    asof = asof or d["date"].max()
    d = d.filter(pl.col("date") <= asof)
    spans = {
        "week": d.filter(pl.col("date").dt.truncate("1w") == pl.lit(asof).dt.truncate("1w")),
        "mtd": d.filter(pl.col("date").dt.truncate("1mo") == pl.lit(asof).dt.truncate("1mo")),
        "ytd": d.filter(pl.col("date").dt.year() == asof.year),
    }
    out = {}
    for name, f in spans.items():
        p, b, c, s = span_excess(f["port_ret"], f["bench_ret"])
        out[name] = {
            "portfolio": p,
            "benchmark": b,
            "excess_compounded": c,
            "excess_summed": s,
            "days": f.height,
        }
    return out


def group_returns(
    factors: pl.DataFrame,
    fwd: pl.DataFrame,
    *,
    factor_col: str = "score",
    return_col: str = "fwd_ret",
    groups: int = 3,
) -> pl.DataFrame:
    """Mean forward return of factor groups per date (top / middle / bottom for groups=3),
    averaged over dates. Works with ~30 assets: groups are rank terciles per date."""
    j = (
        factors.select("date", "industry", tie_round(pl.col(factor_col)).alias("_f"))
        .join(
            fwd.select("date", "industry", pl.col(return_col).alias("_r")), on=["date", "industry"]
        )
        .drop_nulls()
        .filter(pl.col("_f").is_finite() & pl.col("_r").is_finite())
    )
    n = pl.len().over("date")
    j = j.with_columns(
        ((pl.col("_f").rank("ordinal").over("date") - 1) * groups // n).alias("group")
    )
    per_date = j.group_by("date", "group").agg(pl.col("_r").mean())
    names = {0: "bottom", groups - 1: "top"} | {g: f"g{g + 1}" for g in range(1, groups - 1)}
    if groups == 3:
        names[1] = "middle"
    return (
        per_date.group_by("group")
        .agg(pl.col("_r").mean().alias("mean_return"), pl.len().alias("dates"))
        .sort("group", descending=True)
        .with_columns(pl.col("group").replace_strict(names, return_dtype=pl.String).alias("name"))
        .select("name", "mean_return", "dates")
    )


def factor_ic_report(
    factors: pl.DataFrame,
    fwd: pl.DataFrame,
    factor_col: str = "score",
    return_col: str = "fwd_excess",
    horizon: int = 1,
) -> dict:
    """IC and rank IC series summaries (mean, std, ICIR, naive / Newey-West (lag h - 1) /
    non-overlapping t-stats, share positive, a warning below 20 dates) for h-day returns."""
    ic = ic_series(factors, fwd, factor_col=factor_col, return_col=return_col)
    return {
        "ic": summarize_ic(ic["ic"], horizon).to_dict(),
        "rank_ic": summarize_ic(ic["rank_ic"], horizon).to_dict(),
    }


EXCESS_DEFINITIONS = {
    "excess_compounded": "total, geometric: portfolio NAV / benchmark NAV - 1 over the span",
    "excess_total_arithmetic": "total, arithmetic: portfolio total return - benchmark total "
    "return",
    "excess_summed": "sum of daily (portfolio - benchmark) returns over the span",
    "annual_excess": "annualised, geometric: (1 + annual portfolio) / (1 + annual benchmark) - 1",
    "annual_excess_arithmetic": "annualised, arithmetic: annual portfolio - annual benchmark",
    "mean_turnover": "mean sum |w_new - w_drifted| over held rebalances after the first "
    "formation (the last data date's formation is the next holdings, not traded)",
}


def backtest_summary(
    result: BacktestResult,
    factors: pl.DataFrame,
    returns: pl.DataFrame,
    factor_col: str = "score",
    horizon: int = 5,
) -> dict:
    """Performance, calendar-year and to-date tables, IC and group returns of one backtest."""
    fwd = forward_excess_from_returns(returns, horizon)
    reb = result.rebalances
    held = reb.slice(1).filter(pl.col("held"))["turnover"] if "held" in reb.columns else None
    perf = summarize_performance(result.daily, rebalance_turnover=held)
    gross_daily = result.daily.with_columns(pl.col("port_ret_gross").alias("port_ret"))
    gross = summarize_performance(gross_daily, rebalance_turnover=held)
    ex_gross = (gross_daily["port_ret"] - gross_daily["bench_ret"]).drop_nulls().to_numpy()
    latest = result.holdings.filter(pl.col("date") == result.holdings["date"].max())
    unheld = reb.filter(~pl.col("held")) if "held" in reb.columns else reb.clear()
    return {
        "performance": perf.to_dict(),  # after costs
        "performance_before_costs": gross.to_dict(),
        "break_even_cost_bps": break_even_bps(ex_gross, result.daily["turnover"].to_numpy()),
        "costs": result.config.get("costs", "none"),
        "calendar_years": calendar_year_table(result.daily).to_dicts(),
        "to_date": to_date_excess(result.daily),
        "ic": factor_ic_report(factors, fwd, factor_col=factor_col, horizon=horizon),
        "groups": group_returns(factors, fwd, factor_col=factor_col).to_dicts(),
        "latest_holdings": latest["industry"].to_list(),
        # a formation on the last data date: what would be held next, not a traded rebalance
        "next_holdings": latest["industry"].to_list() if unheld.height else None,
        "config": result.config,
        "excess_definitions": EXCESS_DEFINITIONS,
    }
