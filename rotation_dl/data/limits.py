"""Are cross-day returns adjusted? Count close-to-previous-close moves beyond the board's daily
price limit that nothing explains.

A-share limits (percent of the previous close): main board 10, ChiNext (300-302) and STAR
(688/689) 20, Beijing (.BJ) 30; risk-warning stocks (5) are not told apart here, which only
makes the check more lenient. A tolerance covers tick rounding. No limit applies on a stock's
first `listing_days` trading days or on its first day back after a gap in its bars (a
suspension or a relisting), so those moves are not counted.

Adjusted data has a handful of unexplained breaks per 100,000 stock-days; unadjusted data has
about one per 2,000 (nearly all drops on ex-dates). A rate above `max_per_10k` per 10,000
stock-days stops every stage that computes returns across days with `AdjustmentError`, unless
the user says to go on (`data.on_unadjusted=warn`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import polars as pl

from rotation_dl.errors import AdjustmentError

log = logging.getLogger(__name__)

FIXES = (
    "give adjustment factors (data.adjustment), a pre_close column, or adjusted daily bars "
    "(data.adjusted_daily); or set data.on_unadjusted=warn to go on knowingly"
)


def board_limit(symbol: pl.Expr) -> pl.Expr:
    """Daily price limit as a fraction of the previous close, from the code."""
    code = symbol.str.slice(0, 3)
    return (
        pl.when(symbol.str.ends_with(".BJ"))
        .then(0.30)
        .when(code.is_in(["300", "301", "302", "688", "689"]))
        .then(0.20)
        .otherwise(0.10)
    )


@dataclass(frozen=True)
class LimitCheck:
    stock_days: int
    breaks: pl.DataFrame  # symbol, date, prev_close, close, move, limit

    @property
    def per_10k(self) -> float:
        return 1e4 * self.breaks.height / self.stock_days if self.stock_days else 0.0

    def examples(self, n: int = 3) -> list[str]:
        rows = self.breaks.sort(pl.col("move").abs(), descending=True).head(n).to_dicts()
        return [f"{r['symbol']} {r['date']} {r['move']:+.1%}" for r in rows]


def limit_breaks(
    daily: pl.DataFrame | pl.LazyFrame,
    *,
    tolerance: float = 0.005,
    listing_days: int = 5,
) -> LimitCheck:
    """(symbol, date, close) daily closes -> the moves beyond each board's limit that fall
    neither in a stock's first `listing_days` days nor on its first day back after a gap."""
    cal = daily.lazy().select(pl.col("date").unique().sort()).collect()["date"]
    pos = pl.DataFrame({"date": cal, "_k": pl.int_range(cal.len(), eager=True)})
    lf = (
        daily.lazy()
        .filter(pl.col("close").is_finite() & (pl.col("close") > 0))
        .select("symbol", "date", "close")
        .join(pos.lazy(), on="date")
        .sort("symbol", "date")
        .with_columns(
            pl.col("close").shift(1).over("symbol").alias("prev_close"),
            (pl.col("_k") - pl.col("_k").shift(1).over("symbol")).alias("_step"),
            pl.int_range(pl.len()).over("symbol").alias("_age"),
            board_limit(pl.col("symbol")).alias("limit"),
        )
    )
    checked = lf.filter(
        pl.col("prev_close").is_not_null()
        & (pl.col("_step") == 1)
        & (pl.col("_age") >= listing_days)
    )
    move = (pl.col("close") / pl.col("prev_close") - 1).alias("move")
    stock_days, breaks = pl.collect_all(
        [
            checked.select(pl.len()),
            checked.with_columns(move)
            .filter(pl.col("move").abs() > pl.col("limit") + tolerance)
            .select("symbol", "date", "prev_close", "close", "move", "limit"),
        ]
    )
    return LimitCheck(int(stock_days.item()), breaks)


def check_adjusted(
    daily: pl.DataFrame | pl.LazyFrame,
    source: str,
    *,
    max_per_10k: float = 1.0,
    on_unadjusted: str = "fail",
) -> LimitCheck:
    """Refuse daily closes whose rate of unexplained limit breaks says they are unadjusted;
    below the threshold (or with `on_unadjusted=warn`) the breaks are logged."""
    res = limit_breaks(daily)
    n = res.breaks.height
    if n and res.per_10k > max_per_10k and on_unadjusted == "fail":
        raise AdjustmentError(
            f"moves beyond the daily price limit that no listing, resumption or adjustment "
            f"explains ({res.per_10k:.2f} per 10,000 stock-days, over {res.stock_days:,}; more "
            f"than {max_per_10k:g} means unadjusted prices): {FIXES}",
            file=source,
            column="close",
            count=n,
            example=", ".join(res.examples()),
            unit="stock-day",
        )
    if n:
        log.warning(
            "%s: %d move(s) beyond the daily price limit (%.2f per 10,000 stock-days), e.g. %s",
            source,
            n,
            res.per_10k,
            ", ".join(res.examples()),
        )
    return res
