"""Feature normalisation statistics, fitted on a fold's training dates only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

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


def fit_norm_stats(
    x: np.ndarray,
    days: np.ndarray,
    valid: np.ndarray,
    features: Sequence[str],
    dates: Sequence,
    clip: float = 5.0,
) -> NormStats:
    """Mean/std of each feature over `days` (indices) and valid (day, industry) cells.

    Args:
        x: panel features [D, N, P, F] (NaN where undefined).
        days: training day indices.
        valid: [D, N] cells whose inputs are usable.
    """
    sub = x[days][valid[days]]  # [cells, P, F]
    flat = sub.reshape(-1, sub.shape[-1]).astype(np.float64)
    mean = np.nanmean(flat, axis=0)
    std = np.nanstd(flat, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
    return NormStats(
        tuple(features),
        tuple(mean.tolist()),
        tuple(std.tolist()),
        str(dates[int(days.min())]),
        str(dates[int(days.max())]),
        clip,
    )


def apply_norm(x: np.ndarray, stats: NormStats) -> np.ndarray:
    """(x - mean) / std, clipped to +-clip, NaN -> 0; returns float32."""
    mean = np.asarray(stats.mean, dtype=np.float32)
    std = np.asarray(stats.std, dtype=np.float32)
    out = (x.astype(np.float32) - mean) / std
    np.clip(out, -stats.clip, stats.clip, out=out)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
