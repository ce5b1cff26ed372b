"""Feature normalisation: statistics fitted on a fold's training cells only, and the one rule
that applies them, for numpy arrays (scoring, export) and torch tensors (training) alike."""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class NormStats:
    """Per-feature mean and standard deviation, with the span they were fitted on."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fitted_from: str
    fitted_to: str
    clip: float = 5.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NormStats:
        return cls(
            **{
                **d,
                "features": tuple(d["features"]),
                "mean": tuple(d["mean"]),
                "std": tuple(d["std"]),
            }
        )

    @functools.cached_property
    def mean32(self) -> np.ndarray:
        return np.asarray(self.mean, dtype=np.float32)

    @functools.cached_property
    def std32(self) -> np.ndarray:
        return np.asarray(self.std, dtype=np.float32)


def fit_norm(
    cells: np.ndarray,
    features: Sequence[str],
    fitted_from: object,
    fitted_to: object,
    clip: float = 5.0,
) -> NormStats:
    """Mean/std of each feature over `cells` [n, F] (non-finite values left out); a feature
    with no finite value gets mean 0, one without spread std 1."""
    flat = np.asarray(cells, dtype=np.float64).reshape(-1, len(features))
    flat = np.where(np.isfinite(flat), flat, np.nan)
    with warnings.catch_warnings():  # a feature without a finite cell: NaN, replaced below
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(flat, axis=0) if len(flat) else np.full(len(features), np.nan)
        std = np.nanstd(flat, axis=0) if len(flat) else np.full(len(features), np.nan)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
    return NormStats(
        tuple(features),
        tuple(mean.tolist()),
        tuple(std.tolist()),
        str(fitted_from),
        str(fitted_to),
        clip,
    )


def fit_norm_stats(
    x: np.ndarray,
    days: np.ndarray,
    valid: np.ndarray,
    features: Sequence[str],
    dates: Sequence,
    clip: float = 5.0,
) -> NormStats:
    """`fit_norm` over `days` (indices) and valid (day, unit) cells of a panel.

    Args:
        x: panel features [D, N, P, F] (NaN where undefined).
        days: training day indices.
        valid: [D, N] cells whose inputs are usable.
    """
    days = np.asarray(days)
    sub = np.asarray(x[days])[np.asarray(valid)[days]]  # [cells, P, F]
    return fit_norm(sub, features, dates[int(days.min())], dates[int(days.max())], clip)


def _namespace(x: Any) -> Any:
    """numpy, or torch for a tensor: taken from the loaded modules (a tensor means torch is
    loaded), so this module never imports torch and scoring never loads it."""
    if type(x).__module__.startswith("torch"):
        return sys.modules["torch"]
    return np


def normalise(x: Any, norm: NormStats) -> Any:
    """(x - mean) / std, clipped to +-clip, NaN -> 0, as float32: the one definition, used
    on numpy arrays (any float dtype, memory-mapped or bfloat16) and on torch tensors (on
    their own device)."""
    xp = _namespace(x)
    device = getattr(x, "device", None) if xp is not np else None
    mean = xp.asarray(norm.mean32, device=device)
    std = xp.asarray(norm.std32, device=device)
    out = (xp.asarray(x, dtype=xp.float32) - mean) / std
    out = xp.clip(out, -norm.clip, norm.clip)
    return xp.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
