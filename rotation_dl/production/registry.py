"""The model registry: every exported ensemble is an entry with a version, its training range and
provenance, its ONNX digests, its gate result and a status (`candidate`, `live`, `retired`).

Stored as an append-only Delta table of events (registered, gated, promoted, retired): an entry's
state is the fold of its events, each change is one atomic commit, and the table's history is
the registry's audit trail. A promotion retires the previous live entry in the same commit, so
there is never a moment with two live models or none.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from rotation_dl.errors import ConfigError
from rotation_dl.production import tables

SCHEMA: dict[str, pl.DataType] = {
    "seq": pl.Int64(),  # the event's place in the registry's history (reads are unordered)
    "version": pl.Int64(),
    "event": pl.String(),
    "status": pl.String(),
    "at": pl.String(),
    "by": pl.String(),
    "asof": pl.String(),
    "detail": pl.String(),
}
STATUSES = ("candidate", "live", "retired")


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Entry:
    """One registered ensemble and its current state."""

    version: int
    status: str
    detail: dict
    gate: dict | None
    promoted_at: str | None
    promoted_by: str | None
    registered_at: str

    @property
    def fold(self) -> int:
        return int(self.detail["fold"])

    @property
    def models(self) -> list[Path]:
        return [Path(p) for p in self.detail["models"]]

    @property
    def gate_passed(self) -> bool | None:
        return None if self.gate is None else bool(self.gate["passed"])


def events(path: Path) -> pl.DataFrame:
    """Every event, in the order they were committed."""
    return tables.read(path, SCHEMA).sort("seq")


def entries(path: Path) -> list[Entry]:
    """Every entry with its current state, by version."""
    ev = events(path)
    out = []
    for (version,), rows in sorted(ev.partition_by("version", as_dict=True).items()):
        rows_d = rows.to_dicts()  # a handful of events per entry
        reg = next(r for r in rows_d if r["event"] == "registered")
        gated = [r for r in rows_d if r["event"] == "gated"]
        promoted = [r for r in rows_d if r["event"] == "promoted"]
        out.append(
            Entry(
                int(version),
                rows_d[-1]["status"],
                json.loads(reg["detail"]),
                json.loads(gated[-1]["detail"]) if gated else None,
                promoted[-1]["at"] if promoted else None,
                promoted[-1]["by"] if promoted else None,
                reg["at"],
            )
        )
    return out


def live(path: Path) -> Entry | None:
    found = [e for e in entries(path) if e.status == "live"]
    return found[-1] if found else None


def for_fold(path: Path, fold: int) -> Entry | None:
    """The latest entry trained for walk-forward fold `fold` (any status)."""
    found = [e for e in entries(path) if e.fold == fold]
    return found[-1] if found else None


def next_version(path: Path) -> int:
    ev = events(path)
    return 1 if ev.is_empty() else int(ev["version"].max()) + 1  # type: ignore[arg-type]


def _append(path: Path, rows: Sequence[tuple[int, str, str, str, str, dict]]) -> None:
    """Append events in one commit, numbered after the last (the cycle's lock makes the
    registry single-writer)."""
    at, first = now_text(), events(path).height
    frame = pl.DataFrame(
        [
            {
                "seq": first + k,
                "version": v,
                "event": e,
                "status": s,
                "at": at,
                "by": by,
                "asof": asof,
                "detail": json.dumps(d, sort_keys=True, default=str),
            }
            for k, (v, e, s, by, asof, d) in enumerate(rows)
        ],
        schema=SCHEMA,
    )
    tables.append(path, frame)


def register(path: Path, version: int, detail: dict, by: str, asof: str) -> Entry:
    """A new candidate entry (refused when the version exists)."""
    if any(e.version == version for e in entries(path)):
        raise ConfigError(f"{path}: model version {version} is registered already")
    _append(path, [(version, "registered", "candidate", by, asof, detail)])
    return next(e for e in entries(path) if e.version == version)


def record_gate(path: Path, version: int, result: dict, by: str, asof: str) -> None:
    entry = _get(path, version)
    _append(path, [(version, "gated", entry.status, by, asof, result)])


def _get(path: Path, version: int) -> Entry:
    for e in entries(path):
        if e.version == version:
            return e
    known = ", ".join(str(e.version) for e in entries(path)) or "none"
    raise ConfigError(f"{path}: no model version {version} in the registry (versions: {known})")


def promote(path: Path, version: int, by: str, asof: str, why: str = "gate passed") -> Entry:
    """Make `version` live and retire the live one, in one commit. A version whose gate failed
    (or was never run) is refused: `rollback` is the way back to a model that was live."""
    entry = _get(path, version)
    if entry.status == "live":
        return entry
    if entry.gate_passed is not True and why != "rollback":
        reason = (
            "it has not been through the gate"
            if entry.gate is None
            else (f"its gate failed: {entry.gate.get('reason')}")
        )
        raise ConfigError(f"model version {version} cannot be promoted: {reason}")
    current = live(path)
    retire = {"replaced_by": version, "why": why}
    rows = [(current.version, "retired", "retired", by, asof, retire)] if current else []
    rows.append((version, "promoted", "live", by, asof, {"why": why}))
    _append(path, rows)
    return _get(path, version)


def rollback(path: Path, by: str, asof: str) -> Entry:
    """Retire the live entry and make the one live before it live again (one commit); a
    version once rolled back is never returned to by a later rollback."""
    ev = events(path)
    current = live(path)
    if current is None:
        raise ConfigError(f"{path}: no live model to roll back")
    rolled_back = {
        int(r["version"])
        for r in ev.filter(pl.col("event") == "retired").to_dicts()
        if json.loads(r["detail"]).get("why") == "rollback"
    }
    promoted = ev.filter(pl.col("event") == "promoted")["version"].to_list()
    earlier = [int(v) for v in promoted if v != current.version and v not in rolled_back]
    if not earlier:
        raise ConfigError(
            f"model version {current.version} is the only one ever live: nothing to roll back to"
        )
    return promote(path, earlier[-1], by, asof, why="rollback")


def table(path: Path) -> pl.DataFrame:
    """The registry as one row per entry, for `models list` and the report."""
    rows = []
    for e in entries(path):
        d, g = e.detail, e.gate or {}
        rows.append(
            {
                "version": e.version,
                "status": e.status,
                "fold": e.fold,
                "train": f"{d['train_start']}..{d['train_end']}",
                "first_week": d.get("test_start"),
                "store_version": d.get("store_version"),
                "code_version": d.get("code_version"),
                "models": len(d["models"]),
                "signed": d.get("signed"),
                "val_rank_ic": d.get("val_rank_ic"),
                "gate": None if e.gate is None else ("passed" if g.get("passed") else "failed"),
                "gate_reason": g.get("reason"),
                "promoted_at": e.promoted_at,
                "promoted_by": e.promoted_by,
            }
        )
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
