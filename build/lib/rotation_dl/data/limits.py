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
    """(symbol, date, close[, volume]) daily closes -> the moves beyond each board's limit that
    fall neither in a stock's first `listing_days` trading days nor on its first day back after
    a gap (a day without a close, or with no volume, is a gap).

    Works on the dense [day, stock] close matrix: memory is a few day x stock arrays, whatever
    the number of rows.
    """
    import numpy as np

    from rotation_dl.baselines.matrix import close_matrix

    m = close_matrix(daily)
    c = m.close  # [D, S], NaN where no close
    have = np.isfinite(c)
    prev = np.vstack([np.full((1, c.shape[1]), np.nan), c[:-1]])
    age = np.cumsum(have, axis=0) - 1  # trading days since the stock's first close
    checked = have & np.isfinite(prev) & (age >= listing_days)
    limits = (
        pl.DataFrame({"symbol": m.symbols})
        .select(board_limit(pl.col("symbol")).alias("l"))["l"]
        .to_numpy()
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        move = c / prev - 1
    hit = checked & (np.abs(move) > limits[None, :] + tolerance)
    t, s = np.nonzero(hit)
    breaks = pl.DataFrame(
        {
            "symbol": [m.symbols[k] for k in s],
            "date": [m.dates[k] for k in t],
            "prev_close": prev[t, s],
            "close": c[t, s],
            "move": move[t, s],
            "limit": limits[s],
        },
        schema={
            "symbol": pl.String,
            "date": pl.Date,
            "prev_close": pl.Float64,
            "close": pl.Float64,
            "move": pl.Float64,
            "limit": pl.Float64,
        },
    )
    return LimitCheck(int(checked.sum()), breaks)


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
