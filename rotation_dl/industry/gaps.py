"""Unexplained limit moves treated as missing overnight returns (`data.on_unadjusted=drop`).

Unadjusted bars jump on ex-dates: the move from the previous close to the open is the
dividend or split, not a return. Without factors or a `pre_close` to explain them, the moves
beyond the board's daily price limit (`data.limits.limit_breaks`) are the evidence. Each
flagged stock-day's overnight move is left out by an adjustment factor on the stock's earlier
prices, r = open_t / close_{t-1}: its previous close becomes its open, so the industry bars,
labels, the DI and the backtest all see the day's own move and no gap. Intraday, that is
exactly the first bar's return taken from its open; for daily bars the day's return becomes
open-to-close. The factors compose with whatever adjustment was already applied.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from rotation_dl.data.limits import LimitCheck


def gap_factors(
    adjusted: pl.DataFrame, raw_close: pl.DataFrame, check: LimitCheck
) -> pl.DataFrame:
    """(symbol, date, factor) as-of factors for raw prices: the adjustment already in
    `adjusted` (its close over the raw close) times the factor that removes each flagged
    overnight move, on the days where either changes (a sparse table for `adjust_bars`).

    Args:
        adjusted: daily bars as adjusted so far (symbol, date, open, close).
        raw_close: the stored, unadjusted daily closes (symbol, date, close).
        check: the limit breaks found in `adjusted` (symbol, date, prev_close).
    """
    breaks = check.breaks.join(
        adjusted.select("symbol", "date", pl.col("open").alias("_open")),
        on=["symbol", "date"],
        how="left",
    ).select(
        "symbol",
        "date",
        (pl.col("_open") / pl.col("prev_close")).log().fill_nan(0.0).fill_null(0.0).alias("_lr"),
    )
    days = (
        adjusted.select("symbol", "date", pl.col("close").alias("_adj"))
        .join(
            raw_close.select("symbol", "date", pl.col("close").alias("_raw")),
            on=["symbol", "date"],
            how="left",
        )  # fmt: skip
        .join(breaks, on=["symbol", "date"], how="left")
        .with_columns(pl.col("_lr").fill_null(0.0))
        .sort("symbol", "date")
    )
    base = pl.when(pl.col("_raw") > 0).then(pl.col("_adj") / pl.col("_raw")).otherwise(None)
    g = (pl.col("_lr").sum() - pl.col("_lr").cum_sum()).over("symbol").exp()
    table = days.with_columns(
        base.forward_fill().over("symbol").fill_null(1.0).alias("_base"), g.alias("_g")
    ).with_columns((pl.col("_base") * pl.col("_g")).alias("factor"))
    changed = (
        (pl.col("factor") / pl.col("factor").shift(1).over("symbol") - 1).abs() > 1e-12
    ) | pl.col("factor").shift(1).over("symbol").is_null()
    return table.filter(changed).select("symbol", "date", "factor")


def gap_summary(check: LimitCheck, policy: str) -> dict:
    """What the caveats say: how many stock-days moved beyond the limit unexplained, and what
    was done about it."""
    return {
        "policy": policy,
        "stock_days": int(check.breaks.height),
        "checked_stock_days": int(check.stock_days),
        "per_10k": float(np.round(check.per_10k, 4)),
        "examples": check.examples(),
    }


def caveat_text(summary: dict) -> str | None:
    """One line for every output built from such data (None when nothing was flagged)."""
    n = summary["stock_days"]
    if not n:
        return None
    rate = f"{n:,} stock-day(s), {summary['per_10k']:.2f} per 10,000"
    if summary["policy"] == "drop":
        return (
            f"unadjusted data: the overnight moves of {rate} beyond the daily price limit "
            "(ex-dates without factors) are left out of returns, labels and the DI "
            "(data.on_unadjusted=drop)"
        )
    return (
        f"unadjusted data: {rate} move(s) beyond the daily price limit are in the returns as "
        "they are (data.on_unadjusted=warn)"
    )
