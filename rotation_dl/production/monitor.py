"""The live monitor: how published weeks turned out, whether this week's inputs look like the
training data, and whether this week's data are whole.

* Live performance: each published week whose h-day label has matured gets its realised rank IC
  and top-k excess (before and after costs); the running mean has a Newey-West t (lag: the
  label's overlap in weeks); the mean of the last W weeks is set against the distribution of
  W-week means of the model's own walk-forward OOS IC (an alert below its 5th percentile).
* Input drift: the population stability index of each input feature, this week's cells against
  decile bins of the training window's cells, PSI = sum (a - e) ln(a / e) (an alert at 0.25,
  the usual convention).
* Data health: industries without a trading constituent this week, the constituents trading
  on the scored day against the median of the 20 days before, and the store's last day
  against the market calendar.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from rotation_dl.backtest.costs import CostModel
from rotation_dl.backtest.ic import ic_series, summarize_ic
from rotation_dl.features.bars import daily_closes
from rotation_dl.features.labels import forward_excess

PSI_FLOOR = 1e-4  # a bin's share below this counts as this (an empty bin would be log 0)


# ---- drift ---------------------------------------------------------------------------------
def feature_bins(values: np.ndarray, names: Sequence[str], bins: int = 10) -> dict:
    """Decile edges of each feature over `values` [cells, features] (non-finite left out) and
    the share of cells in each bin: the reference a week's PSI is measured against."""
    out = {}
    for j, name in enumerate(names):
        v = values[:, j]
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        edges = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=edges.size + 1)
        out[name] = {"edges": edges.tolist(), "share": (counts / v.size).tolist()}
    return out


def psi(reference: Mapping, values: np.ndarray) -> float:
    """PSI of `values` against one feature's reference bins (NaN without a finite value)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan")
    edges = np.asarray(reference["edges"], dtype=float)
    e = np.maximum(np.asarray(reference["share"], dtype=float), PSI_FLOOR)
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=edges.size + 1)
    a = np.maximum(counts / v.size, PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


# ---- live performance ------------------------------------------------------------------------
def matured_labels(industry_bars: pl.DataFrame | pl.LazyFrame, horizon: int) -> pl.DataFrame:
    """(date, industry, fwd_ret) for each day whose h-day forward return is known (the
    training label's return; rank ICs need no excess, it only shifts each date)."""
    return (
        forward_excess(daily_closes(industry_bars.lazy()), horizon)
        .filter(pl.col("fwd_ret").is_not_null())
        .select("date", "industry", "fwd_ret")
        .collect()
    )


def weekly_outcomes(
    published: pl.DataFrame, labels: pl.DataFrame, costs: CostModel | None = None
) -> pl.DataFrame:
    """Per published week with a matured label: rank IC of score vs the h-day forward return,
    the held industries' mean return in excess of the scored industries' mean, and that excess
    after the week's trading costs (equal weights: buys and sells of 1/k each; the first week
    buys the whole book)."""
    weeks = sorted(published["asof"].unique().to_list())
    rows = []
    before: set[str] = set()
    for asof in weeks:
        week = published.filter(pl.col("asof") == asof)
        held = set(week.filter(pl.col("held"))["industry"].to_list())
        k = max(1, len(held))
        buys, sells = len(held - before) / k, len(before - held) / max(1, len(before))
        before = held
        lab = labels.filter(pl.col("date") == asof)
        if lab.is_empty():
            continue
        scores = week.select(pl.col("asof").alias("date"), "industry", "score")
        ric = ic_series(scores, lab, return_col="fwd_ret")["rank_ic"]
        both = lab.join(scores.filter(pl.col("score").is_not_null()), on=["date", "industry"])
        mean_all = both["fwd_ret"].mean()
        mean_held = both.filter(pl.col("industry").is_in(list(held)))["fwd_ret"].mean()
        excess = None if mean_held is None or mean_all is None else mean_held - mean_all
        cost = float(costs.cost(np.array([buys]), np.array([sells]), [asof])[0]) if costs else 0.0
        rows.append(
            {
                "asof": asof,
                "rank_ic": ric[0] if ric.len() else None,
                "topk_excess": excess,
                "topk_excess_net": None if excess is None else excess - cost,
                "turnover": (buys + sells) / 2,
            }
        )
    schema = {
        "asof": pl.Date,
        "rank_ic": pl.Float64,
        "topk_excess": pl.Float64,
        "topk_excess_net": pl.Float64,
        "turnover": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def overlap_weeks(horizon_days: int) -> int:
    """Weekly observations of an h-day label overlap this many weeks (the NW t's lag + 1)."""
    return max(1, math.ceil(horizon_days / 5))


@dataclass(frozen=True)
class Band:
    """W-week means of the walk-forward OOS weekly IC: their 5th, 50th and 95th percentiles."""

    weeks: int
    p5: float
    p50: float
    p95: float
    windows: int

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def oos_band(weekly_ic: Sequence[float], weeks: int) -> Band | None:
    """The band from a model's walk-forward OOS weekly rank ICs (None: fewer than W + 1)."""
    v = np.asarray([x for x in weekly_ic if x is not None and np.isfinite(x)], dtype=float)
    if v.size < weeks + 1:
        return None
    means = np.convolve(v, np.ones(weeks) / weeks, mode="valid")
    p5, p50, p95 = np.quantile(means, [0.05, 0.5, 0.95])
    return Band(weeks, float(p5), float(p50), float(p95), int(means.size))


def live_summary(
    outcomes: pl.DataFrame, horizon_days: int, band: Band | None, min_windows: int = 10
) -> dict:
    """Running live mean rank IC with its Newey-West t, the last W weeks' mean, and whether it
    lies below the OOS band's 5th percentile (never from a band of fewer than `min_windows`
    windows: its 5th percentile would be little more than its minimum)."""
    ic = outcomes["rank_ic"].drop_nulls()
    s = summarize_ic(ic, overlap_weeks(horizon_days))
    out = {
        "live_weeks": s.n_dates,
        "live_mean_ic": s.mean,
        "live_nw_t": s.t_newey_west,
        "live_note": s.warning,
        "window_mean_ic": None,
        "band_p5": None,
        "ic_alert": False,
    }
    if band is not None:
        out["band_p5"] = band.p5
        if ic.len() >= band.weeks:
            window = float(ic.tail(band.weeks).mean())  # type: ignore[arg-type]
            out["window_mean_ic"] = window
            out["ic_alert"] = window < band.p5 and band.windows >= min_windows
        if band.windows < min_windows:
            few = f"band of {band.windows} window(s): too few to alert (needs {min_windows})"
            out["live_note"] = "; ".join(x for x in (out["live_note"], few) if x)
    return out


# ---- data health ---------------------------------------------------------------------------
def active_share(industry_bars: pl.DataFrame | pl.LazyFrame, asof: date, days: int = 20) -> float:
    """Constituents trading on `asof` (the sum over industries of their most active bar)
    against the median of the same count over the `days` trading days before it."""
    per_day = (
        daily_closes(industry_bars.lazy().filter(pl.col("date") <= asof))
        .group_by("date")
        .agg(pl.col("n_active").sum())
        .sort("date")
        .tail(days + 1)
        .collect()
    )
    if per_day.height < 2 or per_day["date"][-1] != asof:
        return float("nan")
    base = float(per_day["n_active"].head(per_day.height - 1).median())  # type: ignore[arg-type]
    return float(per_day["n_active"][-1]) / base if base > 0 else float("nan")


def missing_on(industry_bars: pl.DataFrame | pl.LazyFrame, asof: date) -> list[str]:
    """Industries without a trading constituent on `asof`."""
    day = daily_closes(industry_bars.lazy().filter(pl.col("date") == asof)).collect()
    return sorted(day.filter(pl.col("n_active") == 0)["industry"].to_list())
