"""LightningDataModule over a Panel: a sample is one date with all industries and its window.

The panel is one tensor [D, N, P, F] held once per fold. A batch is a tensor of date indices;
its inputs come from `features.inputs.model_inputs` (the windows gathered by index, normalised
with statistics fitted on the fold's training days only) after the batch reaches its device
(`on_after_batch_transfer`), so nothing is copied per sample and, with `on_device=True`, the
panel lives on the GPU and gathers happen there.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from rotation_dl.features.inputs import model_inputs
from rotation_dl.features.normalize import NormStats, fit_norm_stats
from rotation_dl.features.panel import Panel
from rotation_dl.training.walkforward import Fold


class EpochSeededSampler(Sampler[int]):
    """Shuffles with a permutation that depends only on (seed, epoch), so a resumed run sees
    the same order as an uninterrupted one."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class DateBatches:
    """Loaders over the date indices in `self.days[stage]`, `self.batch_dates` per batch,
    shuffled for training by (seed, epoch) only (shared by the industry and stock modules)."""

    days: dict[str, list[int]]
    batch_dates: int
    seed: int

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        days = torch.tensor(self.days[stage], dtype=torch.long)
        sampler = EpochSeededSampler(len(days), self.seed, shuffle)
        return DataLoader(days, batch_size=self.batch_dates, sampler=sampler, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class PanelDataModule(DateBatches, L.LightningDataModule):
    """Windows of the last `window` days for every industry, one fold at a time.

    Batches after transfer are dicts: x [B, N, W, P, F], y [B, N], mask [B, N], day [B].
    """

    def __init__(
        self,
        panel: Panel,
        fold: Fold,
        window: int = 20,
        batch_dates: int = 16,
        seed: int = 0,
        on_device: bool = False,
        shuffle_labels: bool = False,
        norm: NormStats | None = None,
    ) -> None:
        super().__init__()
        self.panel, self.fold, self.window = panel, fold, window
        self.batch_dates, self.seed, self.on_device = batch_dates, seed, on_device
        self.shuffle_labels = shuffle_labels
        self.norm = norm
        self._x: torch.Tensor | None = None

    # ---- data preparation -------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._x is not None:
            return
        p, f = self.panel, self.fold
        train_days = np.arange(*f.train)
        if self.norm is None:
            self.norm = fit_norm_stats(
                p.x, train_days, np.asarray(p.active), p.spec.features, p.dates
            )
        self._x = torch.from_numpy(np.array(p.x, dtype=np.float32))  # raw; normalised per batch
        label = np.nan_to_num(np.asarray(p.label, dtype=np.float32), nan=0.0)
        mask = p.label_mask()
        if self.shuffle_labels:  # permute industries within each train/val date: no signal left
            rng = np.random.default_rng(self.seed + 7919)
            for d in range(f.train[0], f.val[1]):
                perm = rng.permutation(label.shape[1])
                label[d], mask[d] = label[d, perm], mask[d, perm]
        self._label = torch.from_numpy(label)
        self._mask = torch.from_numpy(mask)
        first = self.window - 1
        usable = mask.any(axis=1)
        self.days = {
            "train": [d for d in range(max(first, f.train[0]), f.train[1]) if usable[d]],
            "val": [d for d in range(max(first, f.val[0]), f.val[1]) if usable[d]],
            "test": list(range(max(first, f.test[0]), f.test[1])),
        }

    # ---- gathering windows --------------------------------------------------------------
    def gather(self, days: torch.Tensor) -> dict[str, torch.Tensor]:
        """Date indices [B] -> batch dict; runs on whatever device the panel tensors are on."""
        assert self._x is not None and self.norm is not None
        days = days.to(self._x.device)
        inputs = model_inputs(
            self._x, days, self.window, self.norm, label=self._label, mask=self._mask
        )
        return {
            "x": inputs.x.contiguous(),  # [B, N, W, P, F]
            "y": inputs.label,
            "mask": inputs.mask,
            "day": days,
        }

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        return batch if self.on_device else self.gather(batch)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not self.on_device:
            return batch
        device = batch.device
        if self._x is not None and self._x.device != device:  # first batch: panel -> device
            self._x, self._label, self._mask = (
                t.to(device) for t in (self._x, self._label, self._mask)
            )
        return self.gather(batch)
