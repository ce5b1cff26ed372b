"""Rebalance schedules on a trading calendar: weekly, monthly, every N days, or given dates."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Literal

import polars as pl

from rotation_dl.errors import ConfigError

Schedule = Literal["weekly", "monthly", "daily", "every_n", "dates"]


def rebalance_dates(
    calendar: Sequence[date] | pl.Series,
    schedule: Schedule = "weekly",
    every_n: int = 5,
    dates: Sequence[date] | None = None,
) -> list[date]:
    """Signal dates: last trading day of each week/month, every N-th day, or `dates` on the
    calendar (each given date moves to the last trading day on or before it)."""
    cal = pl.Series("date", list(calendar), dtype=pl.Date).unique().sort()
    if cal.is_empty():
        raise ConfigError("empty trading calendar")
    frame = pl.DataFrame({"date": cal})
    if schedule == "daily":
        return cal.to_list()
    if schedule == "weekly":
        key = pl.col("date").dt.truncate("1w")
    elif schedule == "monthly":
        key = pl.col("date").dt.truncate("1mo")
    elif schedule == "every_n":
        if every_n < 1:
            raise ConfigError("every_n must be >= 1")
        return cal.gather_every(every_n).to_list()
    elif schedule == "dates":
        if not dates:
            raise ConfigError("schedule=dates needs a list of dates")
        wanted = pl.DataFrame({"want": sorted(dates)}).with_columns(pl.col("want").cast(pl.Date))
        got = wanted.join_asof(frame, left_on="want", right_on="date", strategy="backward")
        return got["date"].drop_nulls().unique().sort().to_list()
    else:
        raise ConfigError(f"unknown schedule {schedule!r}")
    return frame.group_by(key.alias("k")).agg(pl.col("date").max()).sort("date")["date"].to_list()
