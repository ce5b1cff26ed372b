"""Evaluation stages: backtest a factor panel, the diffusion baseline, micro-cap timing and the
factor IC monitor. Each takes plain arguments, writes its tables under `out_dir` (parquet and
CSV, atomically) plus `summary.json`, and returns the summary."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Literal

import polars as pl

from rotation_dl.backtest.engine import (
    BacktestResult,
    constituent_daily_returns,
    industry_daily_returns,
    run_backtest,
)
from rotation_dl.backtest.metrics import (
    calendar_year_table,
    factor_ic_report,
    group_returns,
    summarize_performance,
    to_date_excess,
)
from rotation_dl.backtest.schedule import rebalance_dates
from rotation_dl.backtest.selection import SelectionRule
from rotation_dl.baselines.diffusion import VARIANTS, di_rankings, diffusion_index
from rotation_dl.data.store import atomic_write_bytes, atomic_write_parquet, read_manifest
from rotation_dl.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def write_table(df: pl.DataFrame, out_dir: Path, name: str, csv: bool = True) -> None:
    """name.parquet (+ name.csv with list columns joined) written atomically."""
    atomic_write_parquet(df, out_dir / f"{name}.parquet")
    if csv:
        flat = df.with_columns(
            [pl.col(c).list.join(",") for c, t in df.schema.items() if isinstance(t, pl.List)]
        )
        atomic_write_bytes(out_dir / f"{name}.csv", flat.write_csv().encode())


def write_summary(summary: dict, out_dir: Path, name: str = "summary.json") -> Path:
    path = out_dir / name
    atomic_write_bytes(path, json.dumps(summary, indent=2, default=str).encode())
    return path


# ---- inputs --------------------------------------------------------------------------------
def daily_bars(
    store: str | Path,
    *,
    adjustment: str | Path | None = None,
    adjustment_columns: dict | None = None,
    adjusted_daily: str | Path | None = None,
    adjusted_daily_columns: dict | None = None,
) -> pl.DataFrame:
    """Adjusted daily bars (symbol, date, open, high, low, close, volume, amount).

    A daily store is used as is (assumed adjusted). From an intraday store: adjusted daily bars
    when given (`adjusted_daily`), else the store resampled to days and multiplied by adjustment
    factors when given.
    """
    from rotation_dl.data.industry import adjust_bars
    from rotation_dl.data.readers import (
        ColumnMapping,
        normalize_symbols,
        read_adjustment,
        read_bars_file,
    )
    from rotation_dl.data.resample import resample_bars
    from rotation_dl.data.store import scan_store

    man = read_manifest(Path(store))
    if man is None:
        raise DataError("not a rotation_dl store; run `rotation-dl ingest` first", file=str(store))
    if man.frequency == "daily":
        return scan_store(store).collect()
    if adjusted_daily is not None:
        mapping = ColumnMapping(columns=adjusted_daily_columns or {})
        raw = read_bars_file(Path(adjusted_daily), mapping, with_row_index=False).collect()
        raw = normalize_symbols(raw)
        return raw.with_columns(
            pl.col("ts").dt.date().alias("date"), pl.col("volume").fill_null(0.0).fill_nan(0.0)
        ).select("symbol", "date", "open", "high", "low", "close", "volume", "amount")
    daily = resample_bars(scan_store(store), "1d")
    if adjustment is not None:
        daily = adjust_bars(daily, read_adjustment(adjustment, columns=adjustment_columns))
    return daily.collect()


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
        return industry_daily_returns(pl.scan_parquet(industry_bars_path))
    if source == "file":
        f = (
            pl.read_parquet(returns_file)
            if str(returns_file).endswith(".parquet")
            else pl.read_csv(returns_file, try_parse_dates=True)
        )
        if "ret" not in f.columns:
            if "close" not in f.columns:
                raise DataError(
                    "needs a 'ret' or 'close' column", file=str(returns_file), column="ret"
                )
            f = f.sort("industry", "date").with_columns(
                (pl.col("close") / pl.col("close").shift(1).over("industry") - 1).alias("ret")
            )
        return f.select(
            pl.col("date").cast(pl.Date),
            pl.col("industry").cast(pl.String),
            pl.col("ret").cast(pl.Float64),
        ).drop_nulls()
    raise ConfigError(f"unknown returns source {source!r}")


def forward_returns(returns: pl.DataFrame, horizon: int = 5) -> pl.DataFrame:
    """(date, industry, fwd_ret, fwd_excess): compounded returns over the next `horizon` days."""
    lr = (1 + pl.col("ret")).log()
    return (
        returns.sort("industry", "date")
        .with_columns(
            (lr.rolling_sum(horizon).shift(-horizon).over("industry").exp() - 1).alias("fwd_ret")
        )
        .with_columns(
            (pl.col("fwd_ret") - pl.col("fwd_ret").mean().over("date")).alias("fwd_excess")
        )
        .select("date", "industry", "fwd_ret", "fwd_excess")
    )


# ---- backtest ------------------------------------------------------------------------------
def backtest_report(
    result: BacktestResult,
    factors: pl.DataFrame,
    returns: pl.DataFrame,
    factor_col: str = "score",
    horizon: int = 5,
) -> dict:
    """Performance, calendar-year and to-date tables, IC and group returns for one backtest."""
    fwd = forward_returns(returns, horizon)
    perf = summarize_performance(
        result.daily, rebalance_turnover=result.rebalances["turnover"].slice(1)
    )
    return {
        "performance": perf.to_dict(),
        "calendar_years": calendar_year_table(result.daily).to_dicts(),
        "to_date": to_date_excess(result.daily),
        "ic": factor_ic_report(factors, fwd, factor_col=factor_col),
        "groups": group_returns(factors, fwd, factor_col=factor_col).to_dicts(),
        "latest_holdings": result.holdings.filter(pl.col("date") == result.holdings["date"].max())[
            "industry"
        ].to_list(),
        "config": result.config,
        "excess_definitions": {
            "excess_compounded": "portfolio NAV / benchmark NAV - 1 over the span",
            "excess_summed": "sum of daily (portfolio - benchmark) returns over the span",
        },
    }


def backtest_stage(
    factors: pl.DataFrame,
    returns: pl.DataFrame,
    out_dir: str | Path,
    *,
    rule: SelectionRule,
    schedule: str = "weekly",
    every_n: int = 5,
    dates: Sequence[date] | None = None,
    cost_rate: float = 0.0,
    factor_col: str = "score",
    horizon: int = 5,
    name: str = "backtest",
) -> dict:
    """Run the engine and write holdings, daily, rebalances and the summary under out_dir."""
    out = Path(out_dir)
    res = run_backtest(
        factors,
        returns,
        rule=rule,
        schedule=schedule,
        every_n=every_n,
        dates=dates,
        cost_rate=cost_rate,
        factor_col=factor_col,
    )
    summary = backtest_report(res, factors, returns, factor_col, horizon)
    write_table(res.daily, out, f"{name}_daily")
    write_table(res.holdings, out, f"{name}_holdings")
    write_table(res.rebalances, out, f"{name}_rebalances")
    write_table(calendar_year_table(res.daily), out, f"{name}_years")
    write_summary(summary, out, f"{name}_summary.json")
    return summary


# ---- diffusion baseline --------------------------------------------------------------------
def diffusion_stage(
    daily: pl.DataFrame,
    classification: pl.DataFrame,
    returns: pl.DataFrame,
    out_dir: str | Path,
    *,
    variant: str = "multi_horizon",
    k: int = 20,
    ema_span: float = 10.0,
    rule: SelectionRule | None = None,
    schedule: str = "monthly",
    horizon: int = 5,
    all_variants: bool = False,
) -> dict:
    """DI of the chosen variant (and optionally all), weekly rankings and changes, and the
    monthly top-k portfolio (default top 6) through the backtest engine."""
    rule = rule or SelectionRule(k=6)
    out = Path(out_dir)
    variants = list(VARIANTS) if all_variants else [variant]
    results = {}
    for v in variants:
        di = diffusion_index(daily, classification, v, k, ema_span)
        name = f"diffusion_{v}"
        factors = di.rename({"di": "score"})
        summary = backtest_stage(
            factors, returns, out, rule=rule, schedule=schedule, horizon=horizon, name=name
        )
        write_table(di, out, f"di_{v}", csv=False)
        weeks = rebalance_dates(di["date"].unique(), "weekly")
        rankings = di_rankings(di, weeks)
        write_table(rankings, out, f"di_{v}_weekly_rankings")
        summary["latest_week"] = rankings.filter(
            pl.col("date") == rankings["date"].max()
        ).to_dicts()
        results[v] = summary
    comparison = [
        {
            "variant": v,
            **{
                k2: s["performance"][k2]
                for k2 in (
                    "excess_compounded",
                    "excess_summed",
                    "annual_excess",
                    "information_ratio",
                    "max_drawdown_excess",
                    "hit_rate",
                )
            },
            "rank_ic_mean": s["ic"]["rank_ic"]["mean"],
            "rank_ic_t": s["ic"]["rank_ic"]["t_stat"],
        }
        for v, s in results.items()
    ]
    summary = {"variant": variant, "variants": results, "comparison": comparison}
    write_summary(summary, out, "diffusion_summary.json")
    return summary
