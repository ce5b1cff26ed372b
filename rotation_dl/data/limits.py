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
    "(data.adjusted_daily); without them, data.on_unadjusted=drop leaves these days' "
    "overnight moves out of returns and data.on_unadjusted=warn goes on with them in, either "
    "with a caveat on every output"
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

    from rotation_dl.data.matrix import close_matrix

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
    return enforce_adjusted(limit_breaks(daily), source, max_per_10k, on_unadjusted)


def enforce_adjusted(
    res: LimitCheck, source: str, max_per_10k: float = 1.0, on_unadjusted: str = "fail"
) -> LimitCheck:
    """`AdjustmentError` when the rate of unexplained breaks exceeds `max_per_10k` (unless
    `on_unadjusted=warn`); otherwise any breaks are logged."""
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


class LimitTally:
    """The same count, chunk by chunk during ingest: daily closes arrive in date order per
    symbol; each stock's last close, calendar position and age are carried between chunks.
    Positions come from the whole input's calendar, so a stock's own missing days are gaps;
    without one (`calendar=None`) the chunks' own dates make it, chunks then arriving in date
    order (a streamed build).

    Small chunks (a file per day) are buffered and counted together, `batch_rows` closes at a
    time: stacked in arrival order and grouped by symbol with a stable sort, each symbol's
    closes stay in the order they came, so the count equals one `add` per chunk."""

    def __init__(
        self,
        calendar: list | None = None,
        listing_days: int = 5,
        tolerance: float = 0.005,
        batch_rows: int = 100_000,
    ) -> None:
        self.grow = calendar is None
        self.pos = pl.DataFrame(
            {"date": sorted(set(calendar or []))}, schema={"date": pl.Date}
        ).with_row_index("_k")
        self.listing_days, self.tolerance = listing_days, tolerance
        self.carry = pl.DataFrame(
            schema={"symbol": pl.String, "_k": pl.UInt32, "close": pl.Float64, "_age": pl.Int64}
        )
        self.stock_days = 0
        self.breaks: list[pl.DataFrame] = []
        self.batch_rows = batch_rows
        self._pending: list[pl.DataFrame] = []
        self._pending_rows = 0

    def add(self, closes: pl.DataFrame) -> None:
        """(symbol, date, close, volume) daily closes of one chunk, sorted by symbol and date
        (validated chunks are); counted at once or with the next chunks (see the class)."""
        if self.grow:
            self._extend(closes["date"])
        self._pending.append(closes.select("symbol", "date", "close", "volume"))
        self._pending_rows += closes.height
        if self._pending_rows >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        pending, self._pending, self._pending_rows = self._pending, [], 0
        if len(pending) == 1:
            self._count(pending[0])
        elif pending:  # each symbol's rows in arrival order, as one add per chunk sees them
            stacked = pl.concat(pending, how="vertical_relaxed")
            self._count(stacked.sort("symbol", maintain_order=True))

    def _count(self, closes: pl.DataFrame) -> None:
        """Shifts within a symbol, the carry joined on each symbol's first row only."""
        new = (
            closes.filter(
                (pl.col("volume").is_null() | (pl.col("volume") > 0)) & (pl.col("close") > 0)
            )  # as close_matrix: a day without volume is a gap, unknown volume is not
            .join(self.pos, on="date", maintain_order="left")
            .select("symbol", "_k", pl.col("close").cast(pl.Float64))
            .with_row_index("_i")
        )
        if new.is_empty():
            return
        same = pl.col("symbol") == pl.col("symbol").shift(1)
        new = new.with_columns(same.fill_null(False).alias("_same"))
        firsts = (
            new.filter(~pl.col("_same"))
            .select("_i", "symbol")
            .join(self.carry, on="symbol", how="left")
            .select(
                "_i",
                pl.col("close").alias("_c_close"),
                pl.col("_k").cast(pl.Int64).alias("_c_k"),
                pl.col("_age").alias("_c_age"),
            )
        )
        new = new.join(firsts, on="_i", how="left", maintain_order="left")
        k = pl.col("_k").cast(pl.Int64)
        start = pl.when(~pl.col("_same")).then(pl.col("_i")).forward_fill()
        base = pl.when(~pl.col("_same")).then(pl.col("_c_age").fill_null(-1)).forward_fill()
        frame = new.with_columns(
            pl.when(pl.col("_same"))
            .then(pl.col("close").shift(1))
            .otherwise(pl.col("_c_close"))
            .alias("prev_close"),
            pl.when(pl.col("_same"))
            .then(k - k.shift(1))
            .otherwise(k - pl.col("_c_k"))
            .alias("_step"),
            (base + (pl.col("_i") - start).cast(pl.Int64) + 1).alias("_age"),
        )
        checked = frame.filter((pl.col("_step") == 1) & (pl.col("_age") >= self.listing_days))
        checked = checked.with_columns(
            board_limit(pl.col("symbol")).alias("limit"),
            (pl.col("close") / pl.col("prev_close") - 1).alias("move"),
        )
        self.stock_days += checked.height
        hit = checked.filter(pl.col("move").abs() > pl.col("limit") + self.tolerance)
        if hit.height:
            cols = ["symbol", "date", "prev_close", "close", "move", "limit"]
            self.breaks.append(hit.join(self.pos, on="_k").select(cols))
        last = frame.filter(pl.col("symbol").ne_missing(pl.col("symbol").shift(-1)))
        last = last.select("symbol", "_k", "close", "_age")
        self.carry = pl.concat([self.carry.join(last, on="symbol", how="anti"), last])

    def _extend(self, dates: pl.Series) -> None:
        known = self.pos["date"]
        new = dates.unique().sort()
        if known.len():
            new = new.filter(new > known.max())
        if new.len():
            start = known.len()
            more = pl.DataFrame({"date": new}).with_row_index("_k", offset=start)
            self.pos = pl.concat([self.pos, more])

    def result(self) -> LimitCheck:
        self._flush()
        floats = {c: pl.Float64 for c in ("prev_close", "close", "move", "limit")}
        schema = {"symbol": pl.String, "date": pl.Date, **floats}
        breaks = pl.concat(self.breaks) if self.breaks else pl.DataFrame(schema=schema)
        return LimitCheck(self.stock_days, breaks)
