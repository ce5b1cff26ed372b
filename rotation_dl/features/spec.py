"""The feature spec: everything besides the input data that determines a panel's numbers.

It travels with every artifact built from a panel (panel cache manifest, checkpoints, ONNX
metadata), so a mismatch is refused instead of silently re-interpreted. The trading session is
part of it: it fixes the bar slots and the bars per day.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rotation_dl.errors import ConfigError
from rotation_dl.session import Session

STOCK_STORAGE = ("float32", "float16", "bfloat16")  # the stock panel's feature dtypes


@dataclass(frozen=True)
class FeatureSpec:
    """Features (names, in model order), bar size (0 = daily), label horizon, volume baseline
    window, the minimum constituents for an active industry-day, and the trading session."""

    features: tuple[str, ...]
    bar_minutes: int
    horizon: int
    volume_window: int
    min_constituents: int
    session: Session

    @classmethod
    def build(
        cls,
        names: Sequence[str] | None,
        bar_minutes: int,
        horizon: int,
        volume_window: int,
        min_constituents: int,
        session: Session,
        series: bool = False,
    ) -> FeatureSpec:
        """A spec with `names` checked against the registry (None: every built-in feature, or
        for industry `series` the ones a single series defines: `SERIES_FEATURES`)."""
        from rotation_dl.features.bars import CONSTITUENT_FEATURES, FEATURES, SERIES_FEATURES

        default = SERIES_FEATURES if series else tuple(FEATURES)
        chosen = tuple(names) if names is not None else default
        unknown = [f for f in chosen if f not in FEATURES]
        if unknown:
            raise ConfigError(f"unknown feature(s) {unknown}; choose from {list(FEATURES)}")
        needs = [f for f in chosen if f in CONSTITUENT_FEATURES]
        if series and needs:
            raise ConfigError(
                f"feature(s) {needs} need constituent stocks; industry series give "
                f"{list(SERIES_FEATURES)}"
            )
        if series and min_constituents > 1:
            raise ConfigError(
                f"features.min_constituents={min_constituents}: an industry series has no "
                "constituents to count; leave it at 1"
            )
        if len(set(chosen)) != len(chosen):
            raise ConfigError(f"features.names has repeats: {list(chosen)}")
        return cls(chosen, bar_minutes, horizon, volume_window, min_constituents, session)

    @property
    def bars_per_day(self) -> int:
        """Bars in a full trading day (1 for daily bars)."""
        return 1 if self.bar_minutes == 0 else self.session.bars_per_day(self.bar_minutes)

    def warmup_days(self, window: int) -> int:
        """Trading days of history a sample needs up to and including its own day: the window
        plus the days before the volume baselines are defined (a quarter of their window)."""
        return window + max(1, self.volume_window // 4)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "bar_minutes": self.bar_minutes,
            "horizon": self.horizon,
            "volume_window": self.volume_window,
            "min_constituents": self.min_constituents,
            "session": self.session.to_strings(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        """The inverse of `to_dict` (metadata of caches, checkpoints and ONNX files)."""
        if "session" not in d:
            raise ConfigError(
                "this artifact's feature spec has no trading session (made by an older "
                "rotation_dl); rebuild or re-export it"
            )
        return cls(
            tuple(d["features"]),
            int(d["bar_minutes"]),
            int(d["horizon"]),
            int(d["volume_window"]),
            int(d["min_constituents"]),
            Session.from_strings(d["session"]),
        )

    def cache_key(self) -> str:
        """Hash of the spec and of the code that turns bars into panel numbers: a changed
        formula gives a new key, so a stale cache is never reused."""
        blob = json.dumps(self.to_dict(), sort_keys=True) + definition_hash()
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# The modules whose code decides a cached panel's numbers are those the two panel builds import,
# directly or through others (lazy imports too), less these, which only name errors and paths.
PANEL_BUILDS = ("rotation_dl.features.panel", "rotation_dl.features.stock_panel")
NOT_NUMBERS = frozenset(
    {"rotation_dl", "rotation_dl.errors", "rotation_dl.artifacts", "rotation_dl.layout"}
)


def _source_file(module: str) -> Path | None:
    """The source file of a rotation_dl module (found, not imported), or None."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin else None


def _imports_of(module: str, path: Path) -> set[str]:
    """The rotation_dl modules a source file imports (`from pkg import module` included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("rotation_dl")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("rotation_dl"):
                found.add(node.module)
                for a in node.names:  # `from rotation_dl.features import bars`: a module
                    child = f"{node.module}.{a.name}"
                    if _source_file(child) is not None:
                        found.add(child)
    return found


@functools.cache
def definition_modules() -> tuple[str, ...]:
    """Every rotation_dl module that shapes a cached feature or label: the import closure of
    the industry and stock panel builds (features, labels, the day grid and its previous close,
    the session clock, the stock bars' returns), less `NOT_NUMBERS`."""
    seen: set[str] = set()
    todo = list(PANEL_BUILDS)
    while todo:
        module = todo.pop()
        path = _source_file(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        todo.extend(_imports_of(module, path) - seen)
    return tuple(sorted(seen - NOT_NUMBERS))


@functools.cache
def definition_hash() -> str:
    """sha256 of the source of `definition_modules()` (read from the files, once per
    process): a changed formula anywhere they reach gives a new cache key."""
    digest = hashlib.sha256()
    for module in definition_modules():
        path = _source_file(module)
        assert path is not None
        digest.update(f"{module}\n".encode() + path.read_bytes())
    return digest.hexdigest()
