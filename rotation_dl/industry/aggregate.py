"""Stock bars + (point-in-time) classification -> industry bars.

Per industry and bar: equal-weight and amount-weighted mean bar return of the constituents that
traded in the bar (suspended or absent stocks are left out), OHLC as a return index built from the
constituents' open/high/low/close relative to their previous close, summed volume and amount, the
count of active constituents and the share of them that rose. A stock's bar return is its close
over its previous bar's close; across days that uses adjusted prices when adjustment factors are
given, so ex-dividend gaps do not show up as returns.
"""

from __future__ import annotations

import logging
from typing import Literal

import polars as pl

from rotation_dl.errors import DataError, UnmappedSymbolError
from rotation_dl.schema import INDUSTRY_BAR_SCHEMA

log = logging.getLogger(__name__)

Weighting = Literal["equal", "amount"]


def add_vwap_gap(bars: pl.LazyFrame) -> pl.LazyFrame:
    """Add `_vwap_gap` = (amount / volume) / close - 1 per stock bar, on raw prices.

    Computed before any price adjustment, because amount / volume is a raw-price VWAP.
    """
    vwap = pl.col("amount") / pl.col("volume")
    return bars.with_columns(
        pl.when((pl.col("volume") > 0) & (pl.col("close") > 0))
        .then(vwap / pl.col("close") - 1)
        .otherwise(None)
        .alias("_vwap_gap")
    )


def adjust_bars(
    bars: pl.LazyFrame, factors: pl.LazyFrame | pl.DataFrame, presorted: bool = False
) -> pl.LazyFrame:
    """Multiply prices by each stock's adjustment factor as of the day (its latest factor dated
    on or before it, else 1), so a sparse factor table (rows on ex-dates only) adjusts any
    slice of history. Row order is kept. `presorted`: each stock's rows already come in time
    order, so the as-of join runs on the rows directly (no per-stock-day table joined back).
    """
    key = "ts" if "ts" in bars.collect_schema() else "date"
    day = pl.col("ts").dt.date() if key == "ts" else pl.col("date")
    bars = bars.with_columns(day.alias("_d"))
    right = factors.lazy().select("symbol", pl.col("date").alias("_d"), "factor").sort("_d")
    if presorted:
        asof = bars.join_asof(
            right, on="_d", by="symbol", strategy="backward", check_sortedness=False
        )  # sorted within each symbol, which is all an as-of join by symbol needs
    else:
        days = bars.select("symbol", "_d").unique().sort("_d")  # one row per stock-day: small
        asof = bars.join(
            days.join_asof(right, on="_d", by="symbol", strategy="backward",
                           check_sortedness=False),  # both sides sorted by day just above
            on=["symbol", "_d"], how="left", maintain_order="left",
        )  # fmt: skip
    return (
        asof.with_columns(pl.col("factor").fill_null(1.0))
        .with_columns(
            [
                (pl.col(c) * pl.col("factor")).alias(c)
                for c in ("open", "high", "low", "close")
                if c in bars.collect_schema()
            ]
        )
        .drop("_d", "factor")
    )


def factors_from_adjusted_daily(
    raw_bars: pl.LazyFrame,
    adjusted_daily: pl.LazyFrame | pl.DataFrame,
    tolerance: float = 0.005,
    carry: pl.DataFrame | None = None,
    tick: float = 0.01,
) -> pl.LazyFrame:
    """Adjustment factors implied by adjusted daily closes, changing only on corporate-action
    days.

    The ratio r = adjusted close / raw last-bar close jitters by ~0.1% on many days (a vendor's
    official close is not the last bar's), which would add spurious returns to the next day's
    first bar. A factor changes only where r moves by more than `tolerance` from the day
    before (an ex-date: dividends and splits move it by 0.5% to 50%); between such days it
    keeps the level set on the last one. The tolerance is tick-aware: the vendor rounds the
    adjusted close to a price tick, so on a low-priced stock one tick of rounding on each of two
    days (2 ticks / adjusted close: 1.3% at 1.50) can exceed `tolerance` on days without any
    corporate action; a step must exceed both. Causal: day t uses days <= t only. `carry`
    (symbol, r, factor of the previous chunk's last day) continues a streamed build.

    Returns (symbol, date, factor, r).
    """
    last = (
        raw_bars.filter(pl.col("close") > 0)
        .group_by("symbol", pl.col("ts").dt.date().alias("date"))
        .agg(pl.col("close").sort_by("ts").last().alias("raw_close"))
    )
    lf = (
        last.join(adjusted_daily.lazy().select("symbol", "date", "close"), on=["symbol", "date"])
        .filter(pl.col("close").is_finite() & (pl.col("close") > 0))
        .select(
            "symbol",
            "date",
            (pl.col("close") / pl.col("raw_close")).alias("r"),
            pl.max_horizontal(pl.lit(tolerance), 2 * tick / pl.col("close")).alias("_tol"),
        )
        .sort("symbol", "date")
    )
    if carry is not None:
        prior = carry.lazy().select(
            "symbol", pl.col("r").alias("_r0"), pl.col("factor").alias("_f0")
        )
        lf = lf.join(prior, on="symbol", how="left").sort("symbol", "date")  # joins reorder
    else:
        lf = lf.with_columns(
            pl.lit(None, pl.Float64).alias("_r0"), pl.lit(None, pl.Float64).alias("_f0")
        )
    prev = pl.coalesce(pl.col("r").shift(1).over("symbol"), pl.col("_r0"))
    change = prev.is_null() | ((pl.col("r") / prev - 1).abs() > pl.col("_tol"))
    seg = change.cast(pl.Int64).cum_sum().over("symbol")
    factor = (
        pl.when(seg == 0).then(pl.col("_f0")).otherwise(pl.col("r").first().over("symbol", seg))
    )
    return lf.with_columns(seg.alias("_seg")).select("symbol", "date", factor.alias("factor"), "r")


def _refuse_overlaps(rows: pl.DataFrame, source: str) -> None:
    if rows.height:
        raise DataError(
            "give a stock two industries on one date (overlapping start/end)",
            file=source,
            column="industry",
            count=rows.height,
            example=rows.row(0, named=True),
        )


def map_industries(
    bars: pl.LazyFrame,
    classification: pl.DataFrame,
    on_unmapped: Literal["fail", "drop"] = "fail",
    source: str = "classification",
) -> pl.LazyFrame:
    """Attach each bar's industry on the bar's date (classification may be point-in-time).

    Row order of `bars` is kept, so time order within a symbol survives the join. `source`
    (the classification file's path) is what errors name.
    """
    schema = bars.collect_schema()
    day = pl.col("ts").dt.date() if "ts" in schema else pl.col("date")
    static = classification.select(
        pl.col("start").is_null().all() & pl.col("end").is_null().all()
    ).item()
    if static:
        _refuse_overlaps(classification.filter(pl.col("symbol").is_duplicated()), source)
        keys = bars.select(pl.col("symbol").unique()).collect()
        matched = classification.select("symbol", "industry")
        unmapped = keys.join(matched, on="symbol", how="anti")
        on = ["symbol"]
    else:
        keys = bars.select("symbol", day.alias("_d")).unique().collect()
        matched = (
            keys.join(classification, on="symbol", how="inner")
            .filter(
                (pl.col("start").is_null() | (pl.col("start") <= pl.col("_d")))
                & (pl.col("end").is_null() | (pl.col("_d") <= pl.col("end")))
            )
            .select("symbol", "_d", "industry")
        )
        _refuse_overlaps(matched.filter(pl.struct("symbol", "_d").is_duplicated()), source)
        unmapped = keys.join(matched, on=["symbol", "_d"], how="anti")
        on = ["symbol", "_d"]
        bars = bars.with_columns(day.alias("_d"))
    if unmapped.height:
        n_sym = unmapped["symbol"].n_unique()
        if on_unmapped == "fail":
            where = "" if static else f" on their dates ({n_sym} symbol{'s' * (n_sym != 1)})"
            raise UnmappedSymbolError(
                f"{'have' if unmapped.height != 1 else 'has'} no industry in the classification"
                f"{where} (set industry.on_unmapped=drop to leave them out)",
                file=source,
                column="symbol",
                count=unmapped.height,
                example=unmapped.row(0, named=True),
                unit="symbol" if static else "(symbol, day) pair",
            )
        log.warning("dropped bars of %d unmapped symbols", n_sym)
    out = bars.join(matched.lazy(), on=on, how="inner", maintain_order="left")
    return out.drop("_d") if not static else out


def stock_bar_returns(
    bars: pl.LazyFrame, presorted: bool = False, prev_close: pl.DataFrame | None = None
) -> pl.LazyFrame:
    """Add prev_close and ret (close over the previous bar's close) per stock.

    A stock's first bar takes its previous close from `prev_close` (symbol, prev_close; the last
    close before this slice of history) or, failing that, its own open, so its return is then
    intrabar. Rows without a positive close (feed placeholders) are treated as absent.
    `presorted` skips the sort when rows already come in time order within each symbol.
    """
    bars = bars.filter(pl.col("close") > 0)
    if not presorted:
        bars = bars.sort("symbol", "ts")
    prev = pl.col("close").shift(1).over("symbol")
    if prev_close is not None:
        bars = bars.join(
            prev_close.lazy().select("symbol", pl.col("prev_close").alias("_carry")),
            on="symbol",
            how="left",
            maintain_order="left",
        )
        prev = prev.fill_null(pl.col("_carry"))
    out = bars.with_columns(prev.fill_null(pl.col("open")).alias("prev_close")).with_columns(
        (pl.col("close") / pl.col("prev_close") - 1).alias("ret")
    )
    return out.drop("_carry") if prev_close is not None else out


def aggregate_industry_returns(
    stock: pl.LazyFrame, weighting: Weighting = "equal"
) -> pl.LazyFrame:
    """Stock bar returns -> per (industry, ts): n_active, ret_ew, ret_aw, relative O/H/L,
    up_share, volume, amount. Only stocks that traded in the bar (volume > 0) count."""
    pc = pl.col("prev_close")
    traded = stock.filter(pl.col("volume") > 0).with_columns(
        (pl.col("open") / pc).alias("_ro"),
        (pl.col("high") / pc).alias("_rh"),
        (pl.col("low") / pc).alias("_rl"),
    )
    amount_sum = pl.col("amount").sum()

    def amount_mean(c: str) -> pl.Expr:
        return (
            pl.when(amount_sum > 0)
            .then((pl.col(c) * pl.col("amount")).sum() / amount_sum)
            .otherwise(pl.col(c).mean())
        )

    rel_aggs = [
        (amount_mean(c) if weighting == "amount" else pl.col(c).mean()).alias(c)
        for c in ("_ro", "_rh", "_rl")
    ]
    return traded.group_by("industry", "ts").agg(
        pl.len().cast(pl.UInt32).alias("n_active"),
        pl.col("ret").mean().alias("ret_ew"),
        amount_mean("ret").alias("ret_aw"),
        *rel_aggs,
        pl.col("_vwap_gap").mean().alias("vwap_gap"),
        (pl.col("ret") > 0).mean().alias("up_share"),
        pl.col("volume").sum(),
        amount_sum.alias("amount"),
    )


def add_return_index(
    agg: pl.LazyFrame,
    industries: pl.Series | list[str],
    times: pl.Series | list,
    weighting: Weighting = "equal",
    start_level: pl.DataFrame | None = None,
) -> pl.LazyFrame:
    """Complete the (industry x time) grid and chain OHLC as a return index.

    Each industry's index starts at its `start_level` (industry, level) or 1.0; bars with no
    trading constituent get n_active = 0, null returns and a flat index.
    """
    grid = pl.LazyFrame({"industry": pl.Series(industries, dtype=pl.String).unique()}).join(
        pl.LazyFrame({"ts": pl.Series(times, dtype=pl.Datetime("us")).unique()}), how="cross"
    )
    ret = pl.col("ret_aw") if weighting == "amount" else pl.col("ret_ew")
    out = (
        grid.join(agg, on=["industry", "ts"], how="left")
        .with_columns(
            pl.col("n_active").fill_null(0),
            pl.col("volume").fill_null(0.0),
            pl.col("amount").fill_null(0.0),
        )
        .sort("industry", "ts")
        .with_columns(ret.alias("ret"))
    )
    level = pl.lit(1.0)
    if start_level is not None:
        out = out.join(
            start_level.lazy().select("industry", pl.col("level").alias("_lvl")),
            on="industry",
            how="left",
            maintain_order="left",
        )
        level = pl.col("_lvl").fill_null(1.0)
    out = (
        out.with_columns(
            (level * (1 + pl.col("ret").fill_null(0.0)).cum_prod().over("industry")).alias("close")
        )
        .with_columns(pl.col("close").shift(1).over("industry").fill_null(level).alias("_prev"))
        .with_columns(
            [
                (pl.col("_prev") * pl.col(r).fill_null(1.0)).alias(c)
                for r, c in (("_ro", "open"), ("_rh", "high"), ("_rl", "low"))
            ]
        )
        .with_columns(pl.col("ts").dt.date().alias("date"))
    )
    return out.select(list(INDUSTRY_BAR_SCHEMA)).cast(INDUSTRY_BAR_SCHEMA)


def industry_bars(
    bars: pl.LazyFrame,
    classification: pl.DataFrame,
    *,
    weighting: Weighting = "equal",
    adjustment: pl.DataFrame | pl.LazyFrame | None = None,
    on_unmapped: Literal["fail", "drop"] = "fail",
    presorted: bool = False,
) -> pl.LazyFrame:
    """Aggregate canonical stock bars to industry bars (INDUSTRY_BAR_SCHEMA).

    Args:
        bars: canonical intraday stock bars.
        classification: symbol, industry, start, end (null start/end = always).
        weighting: `equal` (default) or `amount` weights for `ret` and the OHLC index; both
            `ret_ew` and `ret_aw` are always present.
        adjustment: factors (symbol, date, factor) making raw prices continuous across days.
        on_unmapped: `fail` or `drop` bars of symbols without an industry on that date.
        presorted: rows already come in time order within each symbol (store scans do).

    Returns:
        One row per industry and market bar (every bar time seen in the input); bars where no
        constituent traded have n_active = 0, null returns and a flat index. For long histories
        use `rotation_dl.industry.build.build_industry_bars`, which streams them by date
        chunks (through the numpy kernel of `industry_kernel`, tested equal to this).
    """
    if not presorted:
        bars = bars.sort("symbol", "ts")
    bars = add_vwap_gap(bars)
    if adjustment is not None:
        bars = adjust_bars(bars, adjustment)
    stock = stock_bar_returns(map_industries(bars, classification, on_unmapped), presorted=True)
    keys = stock.select(pl.col("industry").unique().implode(), pl.col("ts").unique().implode())
    industries, times = keys.collect().row(0)
    return add_return_index(
        aggregate_industry_returns(stock, weighting), industries, times, weighting
    )
