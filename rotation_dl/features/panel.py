"""Panel tensors: features [day, industry, bar, feature], labels and masks, built once, cached.

The cache is a directory of plain `.npy` arrays (memory-mapped on load, never pickled) and a
`manifest.json` holding a hash of the input file; the directory is named by `FeatureSpec.cache_key`
(the spec, session included, and the source of the code that computes features and labels), so
a changed input, spec or formula is rebuilt. A build is written to a temporary directory and
renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from rotation_dl.artifacts import read_provenance, remove_stale_temp_dirs, temp_dir_for
from rotation_dl.errors import ConfigError, DataError
from rotation_dl.features.bars import bar_features, daily_closes
from rotation_dl.features.labels import forward_excess_rank
from rotation_dl.features.spec import FeatureSpec

log = logging.getLogger(__name__)
CACHE_VERSION = 2
ARRAYS = ("x", "label", "fwd_ret", "active")


@dataclass
class Panel:
    """Dense panel over the market calendar.

    x:       [D, N, P, F] float32 features (NaN where undefined)
    label:   [D, N] float32 rank-normalised forward excess return (NaN where unknown)
    fwd_ret: [D, N] float32 raw forward h-day return (NaN where unknown)
    active:  [D, N] bool, the industry had at least `min_constituents` trading that day
    """

    x: np.ndarray
    label: np.ndarray
    fwd_ret: np.ndarray
    active: np.ndarray
    dates: list[date]
    industries: list[str]
    spec: FeatureSpec
    source_hash: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def bars_per_day(self) -> int:
        return int(self.x.shape[2])

    @property
    def n_features(self) -> int:
        return int(self.x.shape[3])

    def label_mask(self) -> np.ndarray:
        """Cells usable as training targets: active with a known label."""
        return self.active & np.isfinite(self.label)

    def labels_frame(self) -> pl.DataFrame:
        """(date, industry, fwd_ret, fwd_excess, label) over the whole grid (NaN -> null)."""
        n, d = len(self.industries), len(self.dates)
        fwd = np.asarray(self.fwd_ret, dtype=np.float64)
        active = np.asarray(self.active)
        cells = np.where(active, fwd, np.nan)
        with warnings.catch_warnings():  # an all-empty date has no mean: NaN, as intended
            warnings.simplefilter("ignore", category=RuntimeWarning)
            mean = np.nanmean(cells, axis=1, keepdims=True)
        return pl.DataFrame(
            {
                "date": np.repeat(np.asarray(self.dates, dtype="datetime64[D]"), n),
                "industry": np.tile(np.asarray(self.industries), d),
                "fwd_ret": fwd.reshape(-1),
                "fwd_excess": np.where(active, fwd - mean, np.nan).reshape(-1),
                "label": np.asarray(self.label, dtype=np.float64).reshape(-1),
            }
        ).with_columns(
            pl.col("date").cast(pl.Date), pl.col("fwd_ret", "fwd_excess", "label").fill_nan(None)
        )


def constant_features(panel: Panel) -> dict[str, float | None]:
    """Features that carry nothing in this panel: the same value (or none) in every active
    cell, e.g. `vwap_gap` when amounts were derived as close x volume. name -> that value
    (None when never defined)."""
    x = np.asarray(panel.x)[np.asarray(panel.active)]  # [cells, P, F]
    flat = x.reshape(-1, x.shape[-1])
    out: dict[str, float | None] = {}
    for k, name in enumerate(panel.spec.features):
        col = flat[:, k]
        col = col[np.isfinite(col)]
        if col.size == 0:
            out[name] = None
        elif col.min() == col.max():
            out[name] = float(col[0])
    return out


def without_features(panel: Panel, drop: Sequence[str]) -> Panel:
    """The panel and its spec without the features `drop` (the model never sees them)."""
    from dataclasses import replace

    keep = [k for k, f in enumerate(panel.spec.features) if f not in drop]
    spec = replace(panel.spec, features=tuple(panel.spec.features[k] for k in keep))
    return replace(panel, x=np.ascontiguousarray(np.asarray(panel.x)[..., keep]), spec=spec)


def build_panel(industry_bars: pl.DataFrame | pl.LazyFrame, spec: FeatureSpec) -> Panel:
    """Industry bars -> Panel (features, labels, masks) on the full day x industry grid."""
    lf = industry_bars.lazy()
    feats = bar_features(
        lf,
        spec.bar_minutes,
        spec.features,
        volume_window=spec.volume_window,
        session=spec.session,
    )
    daily = daily_closes(lf)
    labels = forward_excess_rank(daily.select("industry", "date", "close"), spec.horizon)
    feats, daily, labels = pl.collect_all([feats, daily, labels])
    if feats.is_empty():
        raise DataError("no industry bars to build a panel from", file="industry bars", count=0)
    dates = sorted(daily["date"].unique().to_list())
    industries = sorted(daily["industry"].unique().to_list())
    per_day = spec.bars_per_day
    if feats["slot"].max() >= per_day or feats["slot"].min() < 0:
        raise ConfigError(f"bars do not fit a {spec.bar_minutes}-minute grid of {per_day} per day")
    d_idx = {d: i for i, d in enumerate(dates)}
    n_idx = {n: i for i, n in enumerate(industries)}
    D, N, P, F = len(dates), len(industries), per_day, len(spec.features)

    def index(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        di = frame["date"].replace_strict(d_idx, return_dtype=pl.Int64).to_numpy()
        ni = frame["industry"].replace_strict(n_idx, return_dtype=pl.Int64).to_numpy()
        return di, ni

    x = np.full((D, N, P, F), np.nan, dtype=np.float32)
    di, ni = index(feats)
    x[di, ni, feats["slot"].to_numpy()] = feats.select(spec.features).to_numpy().astype(np.float32)
    label = np.full((D, N), np.nan, dtype=np.float32)
    fwd = np.full((D, N), np.nan, dtype=np.float32)
    di, ni = index(labels)
    label[di, ni] = labels["label"].fill_null(np.nan).to_numpy()
    fwd[di, ni] = labels["fwd_ret"].fill_null(np.nan).to_numpy()
    active = np.zeros((D, N), dtype=bool)
    di, ni = index(daily)
    active[di, ni] = (daily["n_active"] >= spec.min_constituents).to_numpy()
    return Panel(x, label, fwd, active, dates, industries, spec)


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest(panel: Panel, source_hash: str) -> dict:
    return {
        "version": CACHE_VERSION,
        "source_hash": source_hash,
        "provenance": panel.extra.get("provenance", {}),  # e.g. the store version
        "spec": panel.spec.to_dict(),
        "cache_key": panel.spec.cache_key(),
        "dates": [d.isoformat() for d in panel.dates],
        "industries": panel.industries,
        "shape": list(panel.x.shape),
    }


def save_panel(panel: Panel, directory: str | Path, source_hash: str = "") -> Path:
    """Write the panel as .npy arrays + manifest.json, atomically (temp dir + rename)."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temp_dirs(target):  # left by a build that was killed
        log.info("removed %s, the temporary folder of an interrupted build", stale)
    tmp = temp_dir_for(target)
    tmp.mkdir()
    try:
        for name in ARRAYS:
            np.save(tmp / f"{name}.npy", getattr(panel, name), allow_pickle=False)
        (tmp / "manifest.json").write_text(json.dumps(_manifest(panel, source_hash), indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_panel(directory: str | Path, mmap: bool = True) -> Panel:
    """Load a saved panel; arrays are memory-mapped read-only when `mmap`."""
    d = Path(directory)
    man = json.loads((d / "manifest.json").read_text())
    arrays = {
        n: np.load(d / f"{n}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        for n in ARRAYS
    }
    spec = FeatureSpec.from_dict(man["spec"])
    return Panel(
        dates=[date.fromisoformat(s) for s in man["dates"]],
        industries=man["industries"],
        spec=spec,
        source_hash=man["source_hash"],
        extra={"provenance": man.get("provenance", {})},
        **arrays,
    )


def cached_panel(
    industry_bars_path: str | Path, spec: FeatureSpec, cache_dir: str | Path
) -> Panel:
    """The panel for this input file and spec: loaded from cache when the input's hash matches
    (the directory name already pins the spec and the feature code)."""
    source = file_hash(industry_bars_path)
    target = Path(cache_dir) / f"panel-{spec.cache_key()}"
    man_path = target / "manifest.json"
    if man_path.exists():
        man = json.loads(man_path.read_text())
        if man.get("source_hash") == source and man.get("version") == CACHE_VERSION:
            log.info("panel cache hit: %s", target)
            return load_panel(target)
        log.info("panel cache stale (input or version changed): rebuilding %s", target)
    panel = build_panel(pl.scan_parquet(industry_bars_path), spec)
    panel.extra["provenance"] = read_provenance(Path(industry_bars_path))
    save_panel(panel, target, source)
    return load_panel(target)
