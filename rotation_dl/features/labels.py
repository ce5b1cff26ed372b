"""Forward excess returns (the one definition) and the training label built from them.

The forward h-day return at date t is level_{t+h} / level_t - 1 on the market calendar (h rows
ahead within the asset, the grid being complete), where the level is a close or an index built by
compounding daily returns; the excess subtracts the cross-sectional mean on date t. The label is
the excess rank-normalised per date. Labels are the only place future data enters, and they never
flow into features or normalisation statistics.
"""

from __future__ import annotations

import polars as pl


def rank_normalise(col: str, by: str = "date") -> pl.Expr:
    """Ranks mapped to [-0.5, 0.5] within each `by` group (ties averaged; nulls stay null)."""
    r = pl.col(col).rank("average").over(by)
    n = pl.col(col).count().over(by)
    return pl.when(n > 1).then((r - 1) / (n - 1) - 0.5).otherwise(0.0 * pl.col(col))


def forward_excess(
    frame: pl.LazyFrame | pl.DataFrame, horizon: int, level: str = "close", key: str = "industry"
) -> pl.LazyFrame:
    """(key, date, <level>, ...) -> the same rows sorted by (key, date) plus `fwd_ret` and
    `fwd_excess` (forward return minus its mean over assets on the date)."""
    fwd = pl.col(level).shift(-horizon).over(key) / pl.col(level) - 1
    return (
        frame.lazy()
        .sort(key, "date")
        .with_columns(fwd.alias("fwd_ret"))
        .with_columns(
            (pl.col("fwd_ret") - pl.col("fwd_ret").mean().over("date")).alias("fwd_excess")
        )
    )


def forward_excess_from_returns(
    returns: pl.LazyFrame | pl.DataFrame, horizon: int, key: str = "industry"
) -> pl.DataFrame:
    """(date, key, ret) daily returns -> (date, key, fwd_ret, fwd_excess), compounding the
    returns into a level first."""
    level = (1 + pl.col("ret")).cum_prod().over(key).alias("_level")
    return (
        forward_excess(
            returns.lazy().sort(key, "date").with_columns(level), horizon, "_level", key
        )
        .select("date", key, "fwd_ret", "fwd_excess")
        .collect()
    )


def forward_excess_rank(daily: pl.LazyFrame, horizon: int) -> pl.LazyFrame:
    """(industry, date, close) -> (date, industry, fwd_ret, fwd_excess, label)."""
    return (
        forward_excess(daily, horizon)
        .with_columns(rank_normalise("fwd_excess").alias("label"))
        .select("date", "industry", "fwd_ret", "fwd_excess", "label")
    )
