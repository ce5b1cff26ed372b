"""Industry bars kept up to date by appending new days, not rebuilding the history.

A streamed build already carries each stock's last close and each industry's index level from
one chunk to the next (`BuildCarry`); saving that state beside the bars lets next week's build
start where this one ended, so a week costs a week's reading however long the history. The
state names the bars it belongs to (last timestamp, rows, store version): bars and state that
do not match (a kill between the two writes, a hand-edited file) are rebuilt in full, never
extended from a wrong state.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from rotation_dl.artifacts import atomic_write_bytes, atomic_write_parquet
from rotation_dl.industry.build import BuildCarry, IndustryBarsResult

# build(start, end, carry): bars of [start, end] continuing `carry` (start None: from day one)
Build = Callable[[date | None, date, BuildCarry | None], IndustryBarsResult]


def carry_path(bars: Path) -> Path:
    """Where the build state of `bars` lives: beside it."""
    return bars.with_name(bars.name + ".carry.json")


def _frame_text(frame: pl.DataFrame | None) -> str | None:
    if frame is None:
        return None
    buf = io.BytesIO()
    frame.write_ipc(buf)  # exact dtypes and float bits
    return base64.b64encode(buf.getvalue()).decode()


def _text_frame(text: str | None) -> pl.DataFrame | None:
    return None if text is None else pl.read_ipc(io.BytesIO(base64.b64decode(text)))


@dataclass(frozen=True)
class BarsState:
    """The build state saved with a bars file, and what identifies that file."""

    carry: BuildCarry
    last_ts: str
    rows: int
    store_version: int | None

    @property
    def last_date(self) -> date:
        return date.fromisoformat(self.last_ts[:10])


def write_state(bars: Path, frame: pl.DataFrame, result: IndustryBarsResult) -> None:
    """Save `result.carry` as the state of the bars `frame` just written at `bars`."""
    c = result.carry
    if c is None:  # a build that cannot be continued (industry series): rebuilt each time
        carry_path(bars).unlink(missing_ok=True)
        return
    payload = {
        "close": _frame_text(c.close),
        "level": _frame_text(c.level),
        "factor": _frame_text(c.factor),
        "industries": list(c.industries),
        "last_ts": str(frame["ts"].max()),
        "rows": frame.height,
        "store_version": result.store_version,
    }
    atomic_write_bytes(carry_path(bars), json.dumps(payload).encode())


def read_state(bars: Path) -> BarsState | None:
    """The saved state of `bars`, or None when there is none or it belongs to other bars."""
    path = carry_path(bars)
    if not (path.exists() and bars.exists()):
        return None
    try:
        d = json.loads(path.read_text())
        carry = BuildCarry(
            _text_frame(d["close"]),
            _text_frame(d["level"]),
            _text_frame(d["factor"]),
            tuple(d["industries"]),
        )
        stats = pl.scan_parquet(bars).select(pl.len(), pl.col("ts").max()).collect()
    except (OSError, ValueError, KeyError, pl.exceptions.PolarsError):
        return None
    if stats.item(0, 0) != d["rows"] or str(stats.item(0, 1)) != d["last_ts"]:
        return None  # not the bars this state ended
    return BarsState(carry, d["last_ts"], d["rows"], d["store_version"])


@dataclass(frozen=True)
class BarsUpdate:
    """What `update_industry_bars` did: `appended` (days added to the saved bars), `rebuilt`
    (a full build: no usable state, history rewritten, a new industry) or `current`."""

    mode: str
    first_new: date | None
    last_date: date
    days_added: int

    def describe(self) -> str:
        if self.mode == "current":
            return f"industry bars: up to date ({self.last_date})"
        what = "appended" if self.mode == "appended" else "rebuilt in full"
        return f"industry bars: {what}, {self.days_added} new day(s) to {self.last_date}"


def update_industry_bars(
    bars: Path, end: date, build: Build, provenance: dict | None = None
) -> BarsUpdate:
    """Bring the bars file at `bars` to `end`: append the days after its last one, continuing
    its saved build state; a file that reaches past `end` (a replay going back) or has no
    usable state is rebuilt in full up to `end`. Bars, then state, each written atomically."""
    state = read_state(bars)
    if state is not None and state.last_date == end:
        return BarsUpdate("current", None, end, 0)
    if state is not None and state.last_date < end:
        res = build(state.last_date + timedelta(days=1), end, state.carry)
        if res.frame.is_empty():
            return BarsUpdate("current", None, state.last_date, 0)
        old = pl.read_parquet(bars)
        known = set(old["industry"].unique().to_list())
        if set(res.frame["industry"].unique().to_list()) <= known:
            new = res.frame.select(old.columns)
            frame = pl.concat([old, new]).sort("industry", "ts")
            atomic_write_parquet(frame, bars, provenance)
            write_state(bars, frame, res)
            days = new["date"].n_unique()
            return BarsUpdate("appended", new["date"].min(), frame["date"].max(), days)
    res = build(None, end, None)  # an industry first seen now needs its history: full build
    frame = res.frame
    atomic_write_parquet(frame, bars, provenance)
    write_state(bars, frame, res)
    return BarsUpdate(
        "rebuilt", frame["date"].min(), frame["date"].max(), frame["date"].n_unique()
    )
