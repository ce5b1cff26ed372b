"""The trading session: maps bar-end times to a continuous session clock and back.

The clock counts trading minutes since the open, skipping breaks: on the A-share session
(09:30-11:30, 13:00-15:00) a bar ending 09:45 sits at minute 15, 11:30 at 120, 13:15 at 135
and 15:00 at 240. Bar grids, resampling and session checks are all arithmetic on this clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import time

import polars as pl

from rotation_dl.errors import ConfigError


def _minutes(text: str) -> int:
    hh, mm = text.split(":")
    return int(hh) * 60 + int(mm)


# The A-share trading hours, written once: the default of `market.session` (conf/market/
# ashare.yaml repeats them as configuration; tests/test_registries.py checks the two agree).
A_SHARE_HOURS: tuple[tuple[str, str], ...] = (("09:30", "11:30"), ("13:00", "15:00"))


@dataclass(frozen=True)
class Session:
    """Trading intervals of a day as (open, close) minutes since midnight."""

    intervals: tuple[tuple[int, int], ...]

    @classmethod
    def from_strings(cls, intervals: Sequence[Sequence[str]]) -> Session:
        """Build from [["09:30", "11:30"], ["13:00", "15:00"]]-style config."""
        parsed = tuple((_minutes(a), _minutes(b)) for a, b in intervals)
        for (o, c), nxt in zip(parsed, [*parsed[1:], None], strict=True):
            if c <= o or (nxt is not None and nxt[0] < c):
                raise ConfigError(
                    f"session intervals must be increasing and disjoint: {intervals}"
                )
        return cls(parsed)

    def to_strings(self) -> list[list[str]]:
        """[["09:30", "11:30"], ...]: the config form, also stored in metadata."""
        return [
            [f"{o // 60:02d}:{o % 60:02d}", f"{c // 60:02d}:{c % 60:02d}"]
            for o, c in self.intervals
        ]

    @property
    def length(self) -> int:
        """Trading minutes per day."""
        return sum(c - o for o, c in self.intervals)

    def bars_per_day(self, bar_minutes: int) -> int:
        """Number of bars of `bar_minutes` in a full day (the last bar may be partial)."""
        return -(-self.length // bar_minutes)

    def bar_end_times(self, bar_minutes: int) -> list[time]:
        """Bar-end times of a full day on a `bar_minutes` grid."""
        clocks = [
            min(k * bar_minutes, self.length) for k in range(1, self.bars_per_day(bar_minutes) + 1)
        ]
        return [self._clock_to_time(c) for c in clocks]

    def _clock_to_time(self, clock: int) -> time:
        elapsed = 0
        for o, c in self.intervals:
            if clock <= elapsed + (c - o):
                m = o + clock - elapsed
                return time(m // 60, m % 60)
            elapsed += c - o
        raise ValueError(f"clock {clock} beyond session length {self.length}")

    def clock(self, ts: pl.Expr) -> pl.Expr:
        """Session minutes at bar end for a datetime expression; null outside the session."""
        m = ts.dt.hour().cast(pl.Int32) * 60 + ts.dt.minute().cast(pl.Int32)
        out = pl.lit(None, dtype=pl.Int32)
        elapsed = 0
        branches = []
        for o, c in self.intervals:
            branches.append(((m > o) & (m <= c), m - o + elapsed))
            elapsed += c - o
        expr = pl.when(branches[0][0]).then(branches[0][1])
        for cond, val in branches[1:]:
            expr = expr.when(cond).then(val)
        return expr.otherwise(out).cast(pl.Int32)

    def clock_to_ts(self, date: pl.Expr, clock: pl.Expr) -> pl.Expr:
        """Inverse of `clock`: a date and session minutes back to a bar-end datetime."""
        elapsed = 0
        expr = None
        for o, c in self.intervals:
            length = c - o
            cond = clock <= elapsed + length
            minute_of_day = clock - elapsed + o
            expr = (pl.when(cond) if expr is None else expr.when(cond)).then(minute_of_day)
            elapsed += length
        assert expr is not None
        minute_of_day = expr.otherwise(None).cast(pl.Int64)
        return date.cast(pl.Datetime("us")) + pl.duration(minutes=minute_of_day)


A_SHARE = Session.from_strings(
    A_SHARE_HOURS
)  # the default of the `session` config key; named, never a silent default


def bar_size_text(bar_minutes: int | None) -> str:
    """How a bar size reads in messages: "daily" for one bar a day (0), else "15-min"."""
    return "daily" if not bar_minutes else f"{bar_minutes}-min"
