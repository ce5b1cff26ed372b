"""Model inputs: normalised feature windows for some dates, with their labels where the panel
has them. The one path from a panel to what a model reads: training batches, the export probe,
`score` and any later consumer (attribution, drift monitoring) all call `model_inputs`.

A panel is [D, U, P, F] (days, units, bars, features; units are industries or stocks) as a numpy
array, a memory-mapped array or a torch tensor; the windows come back in the model's layout
[B, U', W, P, F] in the same kind of array, normalised with `features.normalize.normalise`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rotation_dl.features.normalize import NormStats, _namespace, normalise


@dataclass(frozen=True)
class ModelInputs:
    """x [B, U', W, P, F] float32, normalised; label and mask [B, U'] (None when the panel
    has no labels, as in scoring)."""

    x: Any
    label: Any | None = None
    mask: Any | None = None


def gather_windows(
    x: Any, days: Sequence[int] | Any, window: int, units: Sequence[int] | Any | None = None
) -> Any:
    """Raw windows [B, U', W, P, F] of `window` days ending at each of `days`, for `units`
    (all when None). A numpy (or memory-mapped) panel is read only over the days the windows
    span; a tensor is gathered in one index on its own device."""
    xp = _namespace(x)
    if xp is np:
        days = np.asarray(days, dtype=np.int64)
        idx = days[:, None] + np.arange(-window + 1, 1)  # [B, W]
        lo, hi = int(idx.min()), int(idx.max()) + 1
        block = np.asarray(x[lo:hi])
        if units is not None:
            block = block[:, np.asarray(units, dtype=np.int64)]
        return block[idx - lo].transpose(0, 2, 1, 3, 4)
    days = xp.as_tensor(days, dtype=xp.long, device=x.device)
    idx = days[:, None] + xp.arange(-window + 1, 1, device=x.device)  # [B, W]
    if units is None:
        out = x[idx]  # [B, W, U, P, F]
    else:
        units = xp.as_tensor(units, dtype=xp.long, device=x.device)
        out = x[idx[:, :, None], units[None, None, :]]  # [B, W, U', P, F], one gather
    return out.permute(0, 2, 1, 3, 4)


def _rows(a: Any | None, days: Any, units: Any | None) -> Any | None:
    """a[days] (and [:, units]) of a [D, U] array or tensor."""
    if a is None:
        return None
    if _namespace(a) is np:
        out = np.asarray(a)[np.asarray(days, dtype=np.int64)]
        return out if units is None else out[:, np.asarray(units, dtype=np.int64)]
    d = days.to(a.device) if hasattr(days, "to") else days
    out = a[d]
    return out if units is None else out[:, units.to(a.device) if hasattr(units, "to") else units]


def model_inputs(
    x: Any,
    days: Sequence[int] | Any,
    window: int,
    norm: NormStats,
    units: Sequence[int] | Any | None = None,
    label: Any | None = None,
    mask: Any | None = None,
) -> ModelInputs:
    """Normalised windows of panel `x` [D, U, P, F] ending at each of `days`, under `norm`
    (fitted on a fold's training cells), for `units` (all when None), with the labels and
    label mask [D, U] of those days and units when given."""
    windows = gather_windows(x, days, window, units)
    return ModelInputs(
        normalise(windows, norm), _rows(label, days, units), _rows(mask, days, units)
    )


def panel_inputs(
    panel: Any,
    days: Sequence[int],
    window: int,
    norm: NormStats,
    units: Sequence[int] | None = None,
) -> ModelInputs:
    """`model_inputs` of an industry `Panel` or a `StockPanel` (numpy), with its labels and
    label mask (all False where a scoring panel has no labels)."""
    return model_inputs(
        panel.x, days, window, norm, units, label=panel.label, mask=panel.label_mask()
    )
