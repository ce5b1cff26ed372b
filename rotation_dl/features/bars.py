"""Per-bar industry features (METHODOLOGY section 2), each a named, selectable polars expression.

All features at bar b of day t use only bars at or before b of day t and earlier days: the volume
and amount baselines are means over the *previous* `volume_window` trading days at the same bar
slot (by trading-day index: the same rows on an industry grid, and for a stock with missing days
a shorter window rather than one reaching further back).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

import polars as pl

from rotation_dl.errors import ConfigError
from rotation_dl.features.daygrid import with_day_statistics
from rotation_dl.session import Session


@dataclass(frozen=True)
class Feature:
    """A built-in feature: what it is, and its polars expression given the volume window.

    Expressions read the prepared frame of `bar_features`: the industry bar columns plus
    `_prev_day_close` (the industry's previous day close), `_slot` (bar index in the day) and,
    for a feature with a `baseline` column, `_base_<column>` (its trailing mean at the same
    bar slot, see `features.daygrid`).
    """

    doc: str
    expr: Callable[[int], pl.Expr]
    baseline: str | None = None


_PDC = pl.col("_prev_day_close")
_ACTIVE = pl.col("n_active") > 0


def _relative_to_trailing(col: str) -> pl.Expr:
    """log1p(col) minus log1p of its trailing mean (`_base_<col>`)."""
    return (pl.col(col).log1p() - pl.col(f"_base_{col}").log1p()).fill_nan(None)


# The one list of built-in features, in default model order (config: features.names=null).
FEATURES: dict[str, Feature] = {
    "open_rel": Feature(
        "bar open / previous day's close - 1", lambda w: pl.col("open") / _PDC - 1
    ),
    "high_rel": Feature(
        "bar high / previous day's close - 1", lambda w: pl.col("high") / _PDC - 1
    ),
    "low_rel": Feature("bar low / previous day's close - 1", lambda w: pl.col("low") / _PDC - 1),
    "close_rel": Feature(
        "bar close / previous day's close - 1", lambda w: pl.col("close") / _PDC - 1
    ),
    "bar_ret": Feature(
        "bar return (close over the previous bar's close - 1)",
        lambda w: pl.col("ret").fill_null(0.0),
    ),
    "log_volume_rel": Feature(
        "log volume - log of its mean at the same bar over the previous N days",
        lambda w: pl.when(_ACTIVE).then(_relative_to_trailing("volume")),
        baseline="volume",
    ),
    "log_amount_rel": Feature(
        "log amount - log of its mean at the same bar over the previous N days",
        lambda w: pl.when(_ACTIVE).then(_relative_to_trailing("amount")),
        baseline="amount",
    ),
    "vwap_gap": Feature("constituents' mean VWAP / close - 1", lambda w: pl.col("vwap_gap")),
    "up_share": Feature(
        "share of active constituents up in the bar - 0.5", lambda w: pl.col("up_share") - 0.5
    ),
}
DEFAULT_FEATURES: tuple[str, ...] = tuple(FEATURES)
# Features only constituents define: the share of them up, and their mean raw VWAP gap (an
# index's amount / volume is no price of the index itself).
CONSTITUENT_FEATURES: tuple[str, ...] = ("up_share", "vwap_gap")
# The default for industry series (data.level=industries): everything else.
SERIES_FEATURES: tuple[str, ...] = tuple(f for f in FEATURES if f not in CONSTITUENT_FEATURES)


def bar_slot(ts: pl.Expr, bar_minutes: int, session: Session) -> pl.Expr:
    """0-based index of a bar within its day (0 for daily bars)."""
    if bar_minutes == 0:
        return pl.lit(0, dtype=pl.Int32)
    return ((session.clock(ts) + bar_minutes - 1) // bar_minutes - 1).cast(pl.Int32)


def bar_features(
    industry_bars: pl.LazyFrame,
    bar_minutes: int,
    features: Sequence[str],
    *,
    volume_window: int,
    session: Session,
    sort: bool = True,
    keep: Sequence[str] = (),
    since: date | None = None,
) -> pl.LazyFrame:
    """Industry bars -> (industry, date, ts, slot, <features>), sorted by industry and time
    unless `sort=False`.

    Args:
        industry_bars: INDUSTRY_BAR_SCHEMA rows (a full industry x bar grid).
        bar_minutes: bar size of the input (0 for daily bars).
        features: names from FEATURES, in the order the model sees them.
        volume_window: trailing days for the volume/amount baselines.
        session: trading session (bar slots).
        sort: sort by (industry, ts) first; False when each key's rows already come in time
            order (every expression works per key, so only that order matters).
        keep: input columns passed through after the features (e.g. precomputed ones).
        since: rows of earlier days are read for the baselines and previous closes only, and
            left out of the result (the per-row features are computed for the rest alone).

    Returns:
        A lazy frame; features are null where undefined (first day, warm-up, inactive bars).
    """
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ConfigError(f"unknown feature(s) {unknown}; choose from {list(FEATURES)}")
    if sort:
        industry_bars = industry_bars.sort("industry", "ts")
    lf = industry_bars.with_columns(
        bar_slot(pl.col("ts"), bar_minutes, session).alias("_slot"),
        pl.col("date").rank("dense").cast(pl.Int64).alias("_day"),  # trading-day index
    )
    baselines = dict.fromkeys(FEATURES[f].baseline for f in features if FEATURES[f].baseline)
    lf = with_day_statistics(lf, list(baselines), volume_window)
    if since is not None:
        lf = lf.filter(pl.col("date") >= since)
    if "vwap_gap" not in lf.collect_schema():
        lf = lf.with_columns(pl.lit(None, dtype=pl.Float64).alias("vwap_gap"))
    return lf.select(
        "industry",
        "date",
        "ts",
        pl.col("_slot").alias("slot"),
        *[FEATURES[f].expr(volume_window).cast(pl.Float64).alias(f) for f in features],
        *keep,
    )


def daily_closes(industry_bars: pl.LazyFrame) -> pl.LazyFrame:
    """Each industry's closing index level and most active bar count per day."""
    return (
        industry_bars.group_by("industry", "date")
        .agg(
            pl.col("close").sort_by("ts").last().alias("close"),
            pl.col("n_active").max().alias("n_active"),
        )
        .sort("industry", "date")
    )
