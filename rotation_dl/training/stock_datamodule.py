"""LightningDataModule over a StockPanel: a sample is one date with its constituent stocks.

Windows are index gathers `(date, stock)` from the panel `[D, S, P, F]`: a batch of date
indices becomes x [B, S', W, P, F] by one fancy index. Where the panel fits
`panel_memory_gb` it is held as one tensor (on the accelerator with `on_device`), otherwise
each batch is gathered from the memory-mapped arrays (only the batch's date block is read) into
pinned memory when CUDA is present, so the copy to the device overlaps compute. Inputs come
from `features.inputs.model_inputs`: the gathered windows normalised with statistics fitted on
the fold's training days.

Training batches sample at most `max_stocks` stocks (and, for pooled models, at most
`max_constituents` per industry) with a generator seeded by (seed, batch dates): a resumed run
draws the same stocks. Evaluation batches hold every stock.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from rotation_dl.features.inputs import model_inputs
from rotation_dl.features.normalize import NormStats, fit_norm
from rotation_dl.features.panel import Panel
from rotation_dl.features.stock_panel import StockPanel
from rotation_dl.training.datamodule import DateBatches
from rotation_dl.training.walkforward import Fold

NORM_CELLS = 2_000_000  # (stock-day, bar) cells the normalisation statistics are fitted on


def fit_stock_norm(
    sp: StockPanel, train_days: np.ndarray, clip: float = 5.0, max_cells: int = NORM_CELLS
) -> NormStats:
    """Per-feature mean/std over active stock-days of evenly spaced training days (at most
    about `max_cells` bar cells, so memory stays bounded for any history)."""
    active = np.asarray(sp.active)
    per_day = max(1, int(active[train_days].sum(axis=1).mean())) * sp.x.shape[2]
    step = max(1, int(np.ceil(len(train_days) * per_day / max_cells)))
    days = train_days[::step]
    cells = [np.asarray(sp.x[d][active[d]], dtype=np.float64) for d in days]
    flat = np.concatenate([c.reshape(-1, sp.n_features) for c in cells])
    first, last = sp.dates[int(train_days.min())], sp.dates[int(train_days.max())]
    return fit_norm(flat, sp.features, first, last, clip)


def sample_stocks(
    candidates: np.ndarray,
    member: np.ndarray,
    rng: np.random.Generator,
    max_stocks: int | None,
    max_constituents: int | None,
) -> np.ndarray:
    """A sorted subset of stock indices: at most `max_constituents` per industry (by
    `member`, the industries of the candidates), then at most `max_stocks` in all."""
    chosen = candidates
    if max_constituents is not None:
        keep = []
        for ind in np.unique(member):
            group = chosen[member == ind]
            if len(group) > max_constituents:
                group = rng.choice(group, max_constituents, replace=False)
            keep.append(group)
        chosen = np.concatenate(keep) if keep else chosen[:0]
    if max_stocks is not None and len(chosen) > max_stocks:
        chosen = rng.choice(chosen, max_stocks, replace=False)
    return np.sort(chosen)


def as_tensor(a: np.ndarray) -> torch.Tensor:
    """A numpy feature array as a tensor without a copy; ml_dtypes' bfloat16 (which torch
    cannot take from numpy) through its raw bits, as torch.bfloat16."""
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


class StockDataModule(DateBatches, L.LightningDataModule):
    """Windows of every constituent's last `window` days, one fold at a time.

    Batches after transfer are dicts: x [B, S', W, P, F]; stock targets y_stock, m_stock
    [B, S']; member [B, S'] (industry index, -1 none); valid [B, S'] (active and classified:
    the stocks an industry aggregates or pools); weight [B, S'] (the day's amount);
    industry targets y, mask [B, N]; day [B]; stocks [S'].
    """

    def __init__(
        self,
        stock_panel: StockPanel,
        panel: Panel,
        fold: Fold,
        window: int = 20,
        batch_dates: int = 4,
        seed: int = 0,
        on_device: bool = False,
        shuffle_labels: bool = False,
        max_stocks: int | None = None,
        max_constituents: int | None = None,
        panel_memory_gb: float = 8.0,
        norm: NormStats | None = None,
        stock_targets: bool = True,
    ) -> None:
        super().__init__()
        if stock_panel.dates != panel.dates:
            raise ValueError("the stock panel and the industry panel have different calendars")
        self.sp, self.panel, self.fold, self.window = stock_panel, panel, fold, window
        self.batch_dates, self.seed, self.on_device = batch_dates, seed, on_device
        self.shuffle_labels, self.norm = shuffle_labels, norm
        self.max_stocks, self.max_constituents = max_stocks, max_constituents
        self.panel_memory_gb = panel_memory_gb
        self.stock_targets = stock_targets
        self._x: torch.Tensor | np.ndarray | None = None

    @property
    def in_memory(self) -> bool:
        """Whether the whole panel is held as one tensor (it fits the memory budget)."""
        return self.sp.x.nbytes <= self.panel_memory_gb * 2**30

    def setup(self, stage: str | None = None) -> None:
        if self._x is not None:
            return
        sp, f = self.sp, self.fold
        if self.norm is None:
            self.norm = fit_stock_norm(sp, np.arange(*f.train))
        self._x = as_tensor(np.array(sp.x)) if self.in_memory else sp.x
        y = np.nan_to_num(np.asarray(sp.label, dtype=np.float32), nan=0.0)
        m = sp.label_mask()
        if self.shuffle_labels:  # permute stocks within each train/val date: no signal left
            rng = np.random.default_rng(self.seed + 7919)
            for d in range(f.train[0], f.val[1]):
                perm = rng.permutation(y.shape[1])
                y[d], m[d] = y[d, perm], m[d, perm]
        self._y_stock, self._m_stock = torch.from_numpy(y), torch.from_numpy(m)
        self._member = torch.from_numpy(np.array(sp.member, dtype=np.int64))
        self._weight = torch.from_numpy(np.array(sp.amount, dtype=np.float32))
        self._valid = torch.from_numpy(np.asarray(sp.active) & (np.asarray(sp.member) >= 0))
        self._y = torch.from_numpy(np.nan_to_num(np.asarray(self.panel.label), nan=0.0))
        self._mask = torch.from_numpy(self.panel.label_mask())
        first = self.window - 1
        usable = m.any(axis=1) | self.panel.label_mask().any(axis=1)
        self.days = {
            "train": [d for d in range(max(first, f.train[0]), f.train[1]) if usable[d]],
            "val": [d for d in range(max(first, f.val[0]), f.val[1]) if usable[d]],
            "test": list(range(max(first, f.test[0]), f.test[1])),
        }

    # ---- gathering windows ----------------------------------------------------------------
    def stocks_for(self, days: torch.Tensor, train: bool) -> torch.Tensor:
        """Stock indices of a batch: every stock classified on one of its days (evaluation),
        or a seeded sample of those with a target (training)."""
        d = days.cpu().numpy()
        member = self._member[d].cpu().numpy()
        if not train:
            return torch.from_numpy(np.nonzero((member >= 0).any(axis=0))[0])
        has = (member >= 0).any(axis=0)
        if self.stock_targets:  # a stock model learns only from stocks with a target
            has &= self._m_stock[d].cpu().numpy().any(axis=0)
        candidates = np.nonzero(has)[0]
        rng = np.random.default_rng([self.seed, *d.tolist()])
        chosen = sample_stocks(
            candidates, member.max(axis=0)[candidates], rng, self.max_stocks, self.max_constituents
        )
        return torch.from_numpy(chosen)

    def gather(self, days: torch.Tensor, train: bool = False) -> dict[str, torch.Tensor]:
        """Date indices [B] -> batch dict (see the class docstring)."""
        assert self._x is not None and self.norm is not None
        stocks = self.stocks_for(days, train)
        d = days.to(self._y_stock.device)
        s = stocks.to(self._y_stock.device)
        if isinstance(self._x, torch.Tensor):
            device = self._x.device
            x = model_inputs(self._x, days.to(device), self.window, self.norm, stocks.to(device)).x
        else:  # memory-mapped: read the batch's date block and its stocks only
            lo = int(days.min()) - self.window + 1
            block = np.asarray(self._x[lo : int(days.max()) + 1])[:, stocks.numpy()]
            x = model_inputs(as_tensor(block), days - lo, self.window, self.norm).x.contiguous()
            if torch.cuda.is_available():  # the copy to the device overlaps compute
                x = x.pin_memory()
        return {
            "x": x.contiguous(),
            "y_stock": self._y_stock[d][:, s],
            "m_stock": self._m_stock[d][:, s],
            "member": self._member[d][:, s],
            "weight": self._weight[d][:, s],
            "valid": self._valid[d][:, s],
            "y": self._y[d],
            "mask": self._mask[d],
            "day": days,
            "stocks": stocks,
        }

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        if self.on_device and isinstance(self._x, torch.Tensor):
            return batch
        return self.gather(batch, train=self._training())

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not (self.on_device and isinstance(self._x, torch.Tensor)):
            return batch
        device = batch.device
        if self._x.device != device:  # first batch: the whole panel moves to the device
            for name in ("_x", "_y_stock", "_m_stock", "_member", "_weight", "_valid", "_y",
                         "_mask"):  # fmt: skip
                setattr(self, name, getattr(self, name).to(device))
        return self.gather(batch, train=self._training())

    def _training(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return bool(trainer is not None and trainer.training)
