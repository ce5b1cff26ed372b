"""Information coefficients of a factor panel against forward returns, per date, in polars."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from rotation_dl.backtest.selection import tie_round


def ic_series(
    factors: pl.LazyFrame | pl.DataFrame,
    returns: pl.LazyFrame | pl.DataFrame,
    *,
    factor_col: str = "score",
    return_col: str = "fwd_excess",
    by: str = "date",
    key: str = "industry",
    min_assets: int = 3,
) -> pl.DataFrame:
    """Per-date Pearson IC and Spearman rank IC between a factor and a forward return.

    The factor is rounded to `SCORE_DECIMALS` first: exact ties rank as ties.

    Both inputs carry (`by`, `key`); rows with a null factor or return are left out; dates with
    fewer than `min_assets` pairs are dropped. Returns (date, n, ic, rank_ic) sorted by date.
    """
    joined = (
        factors.lazy()
        .select(by, key, tie_round(pl.col(factor_col)).alias("_f"))
        .join(returns.lazy().select(by, key, pl.col(return_col).alias("_r")), on=[by, key])
        .filter(
            pl.col("_f").is_not_null()
            & pl.col("_r").is_not_null()
            & pl.col("_f").is_finite()
            & pl.col("_r").is_finite()
        )
        .sort(by, key)  # the join's row order varies run to run, and so would the sums' last bit
    )
    return (
        joined.group_by(by)
        .agg(
            pl.len().alias("n"),
            pl.corr("_f", "_r").alias("ic"),
            pl.corr(pl.col("_f").rank("average"), pl.col("_r").rank("average")).alias("rank_ic"),
        )
        .filter(pl.col("n") >= min_assets)
        .with_columns(pl.col("ic").fill_nan(None), pl.col("rank_ic").fill_nan(None))
        .sort(by)
        .collect()
    )


def rank_ic_wide(
    panels: dict[str, pl.DataFrame], labels: pl.DataFrame, factor_col: str = "score"
) -> pl.DataFrame:
    """(date, one rank-IC column per panel) on the dates every panel has an IC: the common
    dates on which candidates are compared (`compare`, a sweep's trials)."""
    wide = None
    for name, panel in panels.items():
        ic = ic_series(panel, labels, factor_col=factor_col).select(
            "date", pl.col("rank_ic").alias(name)
        )
        wide = ic if wide is None else wide.join(ic, on="date", how="inner")
    if wide is None:
        raise ValueError("rank_ic_wide needs at least one panel")
    return wide.drop_nulls().sort("date")


MIN_DATES = 20  # fewer labelled dates than this: the summary is flagged, t-stats undefined


@dataclass(frozen=True)
class ICSummary:
    """Mean, dispersion and significance of a per-date IC series.

    A daily IC of h-day labels overlaps h - 1 days with its neighbours, so the naive t
    (mean / (std / sqrt(n))) overstates significance; `t_newey_west` uses a Newey-West (Bartlett)
    long-run variance with lag h - 1, and `t_non_overlapping` the naive t of every h-th date.
    With fewer than MIN_DATES dates every t is NaN and `warning` says why.
    """

    n_dates: int
    mean: float
    std: float
    icir: float
    t_stat: float
    positive_share: float
    t_newey_west: float = float("nan")
    newey_west_lag: int = 0
    t_non_overlapping: float = float("nan")
    warning: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def newey_west_t(x: np.ndarray, lag: int) -> float:
    """t of the mean of `x` with a Newey-West (Bartlett-kernel) long-run variance:
    S = g0 + 2 sum_{l=1..L} (1 - l/(L+1)) g_l, g_l = sum_t (x_t - m)(x_{t-l} - m) / n."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2:
        return float("nan")
    d = x - x.mean()
    s = d @ d / n
    for k in range(1, min(lag, n - 1) + 1):
        s += 2 * (1 - k / (lag + 1)) * (d[k:] @ d[:-k]) / n
    return float(x.mean() / math.sqrt(s / n)) if s > 0 else float("nan")


def _naive_t(v: np.ndarray) -> float:
    if len(v) < 2:
        return float("nan")
    sd = float(np.std(v, ddof=1))
    return float(v.mean() / sd * math.sqrt(len(v))) if sd > 0 else float("nan")


def summarize_ic(values: pl.Series, horizon: int = 1) -> ICSummary:
    """ICIR = mean / std; naive t = mean / (std / sqrt(n)); Newey-West t with lag horizon - 1;
    non-overlapping t over every `horizon`-th value. Null values are left out."""
    v = values.drop_nulls().to_numpy().astype(np.float64)
    n = len(v)
    if n == 0:
        nan = float("nan")
        return ICSummary(0, nan, nan, nan, nan, nan, warning="no dates with an IC")
    mean = float(v.mean())
    std = float(np.std(v, ddof=1)) if n > 1 else float("nan")
    icir = mean / std if std and std > 0 else float("nan")
    lag = max(0, horizon - 1)
    if n < MIN_DATES:
        nan = float("nan")
        warning = f"only {n} labelled date(s): too few for a t-stat (needs {MIN_DATES})"
        return ICSummary(n, mean, std, icir, nan, float((v > 0).mean()), nan, lag, nan, warning)
    return ICSummary(
        n,
        mean,
        std,
        icir,
        _naive_t(v),
        float((v > 0).mean()),
        newey_west_t(v, lag),
        lag,
        _naive_t(v[:: max(1, horizon)]),
    )


def describe_t(summary: dict) -> str:
    """`t 3.06 (Newey-West 1.95, lag 4; non-overlapping 1.77)`, or the too-few-dates warning."""
    if summary.get("warning"):
        return f"t undefined: {summary['warning']}"
    return (
        f"t {summary['t_stat']:.2f} (Newey-West {summary['t_newey_west']:.2f}, lag "
        f"{summary['newey_west_lag']}; non-overlapping {summary['t_non_overlapping']:.2f})"
    )
