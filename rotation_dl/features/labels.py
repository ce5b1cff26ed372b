"""Labels: forward h-day industry return minus the cross-industry mean, rank-normalised per date.

The label at date t uses closes t and t+h: it is the only place future data enters, and it never
flows into features or normalisation statistics.
"""

from __future__ import annotations

import polars as pl


def rank_normalise(col: str, by: str = "date") -> pl.Expr:
    """Ranks mapped to [-0.5, 0.5] within each `by` group (ties averaged; nulls stay null)."""
    r = pl.col(col).rank("average").over(by)
    n = pl.col(col).count().over(by)
    return pl.when(n > 1).then((r - 1) / (n - 1) - 0.5).otherwise(0.0 * pl.col(col))


def forward_excess_rank(daily: pl.LazyFrame, horizon: int = 5) -> pl.LazyFrame:
    """(industry, date, close) -> (date, industry, fwd_ret, fwd_excess, label).

    fwd_ret is close_{t+h} / close_t - 1 on the market calendar (h rows ahead per industry, the
    grid being complete); fwd_excess subtracts the mean over industries on date t.
    """
    fwd = pl.col("close").shift(-horizon).over("industry") / pl.col("close") - 1
    return (
        daily.sort("industry", "date")
        .with_columns(fwd.alias("fwd_ret"))
        .with_columns(
            (pl.col("fwd_ret") - pl.col("fwd_ret").mean().over("date")).alias("fwd_excess")
        )
        .with_columns(rank_normalise("fwd_excess").alias("label"))
        .select("date", "industry", "fwd_ret", "fwd_excess", "label")
    )
