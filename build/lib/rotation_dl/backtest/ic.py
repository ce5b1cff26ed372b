"""Information coefficients of a factor panel against forward returns, per date, in polars."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import polars as pl


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

    Both inputs carry (`by`, `key`); rows with a null factor or return are left out; dates with
    fewer than `min_assets` pairs are dropped. Returns (date, n, ic, rank_ic) sorted by date.
    """
    joined = (
        factors.lazy()
        .select(by, key, pl.col(factor_col).alias("_f"))
        .join(returns.lazy().select(by, key, pl.col(return_col).alias("_r")), on=[by, key])
        .filter(
            pl.col("_f").is_not_null()
            & pl.col("_r").is_not_null()
            & pl.col("_f").is_finite()
            & pl.col("_r").is_finite()
        )
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


@dataclass(frozen=True)
class ICSummary:
    """Mean, dispersion and significance of an IC series."""

    n_dates: int
    mean: float
    std: float
    icir: float
    t_stat: float
    positive_share: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarize_ic(values: pl.Series) -> ICSummary:
    """ICIR = mean / std; t-stat = mean / (std / sqrt(n)) on non-null values."""
    v = values.drop_nulls()
    n = v.len()
    if n == 0:
        nan = float("nan")
        return ICSummary(0, nan, nan, nan, nan, nan)
    mean = float(v.mean())
    std = float(v.std()) if n > 1 else float("nan")
    icir = mean / std if std and std > 0 else float("nan")
    t = icir * math.sqrt(n) if math.isfinite(icir) else float("nan")
    return ICSummary(n, mean, std, icir, t, float((v > 0).mean()))
