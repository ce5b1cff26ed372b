"""Industry bars kept up to date by appending new days, not rebuilding the history.

A streamed build already carries each stock's last close and each industry's index level from
one chunk to the next (`BuildCarry`); saving that state lets next week's build start where this
one ended, so a week costs a week's reading and writing however long the history. The bars live
in a folder of parts, one per append, and `state.json` names the parts that make the bars (with
the carried state, the last timestamp and the row count): a part not named there (a kill
between the two writes) is never read and is removed by the next update. Bars that cannot be
continued (no state, a replay going back, an industry first seen now) are rebuilt in full.
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

from rotation_dl.artifacts import atomic_write_bytes, atomic_write_parquet, read_provenance
from rotation_dl.industry.build import BuildCarry, IndustryBarsResult

# build(start, end, carry): bars of [start, end] continuing `carry` (start None: from day one)
Build = Callable[[date | None, date, BuildCarry | None], IndustryBarsResult]
STATE = "state.json"


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
    """The parts that make the bars, and the build state after their last day."""

    carry: BuildCarry | None
    parts: tuple[str, ...]
    last_date: date
    rows: int
    industries: tuple[str, ...]


def read_state(folder: Path) -> BarsState | None:
    """The folder's state, or None when there is none or a part it names is gone."""
    try:
        d = json.loads((folder / STATE).read_text())
        carry = (
            BuildCarry(
                _text_frame(d["carry"]["close"]),
                _text_frame(d["carry"]["level"]),
                _text_frame(d["carry"]["factor"]),
                tuple(d["carry"]["industries"]),
            )
            if d["carry"]
            else None
        )
        state = BarsState(
            carry,
            tuple(d["parts"]),
            date.fromisoformat(d["last_date"]),
            int(d["rows"]),
            tuple(d["industries"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all((folder / p).is_file() for p in state.parts):
        return None
    return state


def _write_state(folder: Path, parts: list[str], frame_rows: int, last: date, res) -> None:
    c: BuildCarry | None = res.carry
    payload = {
        "carry": None
        if c is None
        else {
            "close": _frame_text(c.close),
            "level": _frame_text(c.level),
            "factor": _frame_text(c.factor),
            "industries": list(c.industries),
        },
        "parts": parts,
        "last_date": str(last),
        "rows": frame_rows,
        "industries": sorted(res.frame["industry"].unique().to_list()),
        "store_version": res.store_version,
    }
    atomic_write_bytes(folder / STATE, json.dumps(payload).encode())


def scan_bars(folder: Path) -> pl.LazyFrame:
    """The bars the folder's state names (nothing a killed update left behind); reads the
    part names only, not the carried build state."""
    try:
        parts = json.loads((folder / STATE).read_text())["parts"]
    except (OSError, ValueError, KeyError) as exc:
        raise FileNotFoundError(f"{folder}: no industry bars here (no readable {STATE})") from exc
    return pl.scan_parquet([folder / p for p in parts])


def _part_name(frame: pl.DataFrame) -> str:
    a, b = frame["date"].min(), frame["date"].max()
    return f"part-{a:%Y%m%d}-{b:%Y%m%d}.parquet"


def _remove_unnamed(folder: Path, keep: set[str]) -> None:
    for p in folder.glob("part-*.parquet"):
        if p.name not in keep:
            p.unlink(missing_ok=True)


@dataclass(frozen=True)
class BarsUpdate:
    """What `update_industry_bars` did: `appended` (days added to the saved bars), `rebuilt`
    (a full build) or `current` (nothing new)."""

    mode: str
    last_date: date
    days_added: int

    def describe(self) -> str:
        if self.mode == "current":
            return f"industry bars: up to date ({self.last_date})"
        what = "appended" if self.mode == "appended" else "rebuilt in full"
        return f"industry bars: {what}, {self.days_added} new day(s) to {self.last_date}"


def update_industry_bars(
    folder: Path, end: date, build: Build, provenance: dict | None = None
) -> BarsUpdate:
    """Bring the bars in `folder` to `end`: a new part with the days after the last one,
    continuing the saved build state; bars reaching past `end` (a replay going back), without a
    usable state, or meeting an industry first seen now are rebuilt in full up to `end`. The
    part is written first, then the state that names it, each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    state = read_state(folder)
    if state is not None and state.last_date == end:
        _remove_unnamed(folder, set(state.parts))
        return BarsUpdate("current", end, 0)
    if state is not None and state.carry is not None and state.last_date < end:
        res = build(state.last_date + timedelta(days=1), end, state.carry)
        new = res.frame
        if new.is_empty():
            return BarsUpdate("current", state.last_date, 0)
        if set(new["industry"].unique().to_list()) <= set(state.industries):
            name = _part_name(new)
            atomic_write_parquet(new, folder / name, provenance)
            parts = [*state.parts, name]
            _write_state(folder, parts, state.rows + new.height, new["date"].max(), res)
            _remove_unnamed(folder, set(parts))
            return BarsUpdate("appended", new["date"].max(), new["date"].n_unique())
    res = build(None, end, None)  # an industry first seen now needs its history: full build
    frame = res.frame
    name = _part_name(frame)
    atomic_write_parquet(frame, folder / name, provenance)
    _write_state(folder, [name], frame.height, frame["date"].max(), res)
    _remove_unnamed(folder, {name})
    return BarsUpdate("rebuilt", frame["date"].max(), frame["date"].n_unique())


def consolidate(folder: Path, target: Path) -> Path:
    """The folder's bars as one sorted parquet file at `target` (what training reads), with
    the newest part's provenance (the store version it was built from); rewritten only when
    the bars changed since it was written."""
    parts = json.loads((folder / STATE).read_text())["parts"]
    stamp = target.with_name(target.name + ".parts")
    key = json.dumps(list(parts))
    if target.exists() and stamp.exists() and stamp.read_text() == key:
        return target
    frame = scan_bars(folder).collect().sort("industry", "ts")
    atomic_write_parquet(frame, target, read_provenance(folder / parts[-1]))
    atomic_write_bytes(stamp, key.encode())
    return target
