"""The Lightning module: one shared step for train/val/test, cross-sectional metrics per stage."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from rotation_dl.errors import ConfigError
from rotation_dl.models.config import GRUConfig, LossConfig
from rotation_dl.models.gru import build_net
from rotation_dl.models.losses import make_loss, pearson_per_date, rank_ic_per_date


def step_seed(seed: int, epoch: int, batch_idx: int) -> int:
    """A 63-bit seed mixed from (seed, epoch, batch): neighbouring steps get unrelated streams."""
    state = np.random.SeedSequence([seed, epoch, batch_idx]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class RotationModule(L.LightningModule):
    """Scores industries from bar windows; logs `{stage}/loss`, `{stage}/ic`, `{stage}/rank_ic`.

    Hyper-parameters are plain values (network config, loss name and parameters, optimiser
    settings, feature spec and normalisation statistics), so checkpoints describe themselves and
    load with `torch.load(..., weights_only=True)`.
    """

    def __init__(
        self,
        net: dict[str, Any],
        loss: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str | None = "cosine",
        epoch_seed: int | None = 0,
        compile: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # a subclass's own init arguments too
        self.cfg = GRUConfig(**net)
        self.net = self.build_network(self.cfg)
        self.loss_fn = make_loss(LossConfig(**(loss or {})))
        self._forward = torch.compile(self.net) if compile else self.net

    def build_network(self, cfg: GRUConfig) -> torch.nn.Module:
        """The network the module trains (industry-level GRU here)."""
        return build_net(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        pred = self(batch["x"]).float()
        y, mask = batch["y"], batch["mask"]
        loss = self.loss_fn(pred, y, mask)
        with torch.no_grad():
            valid = mask.sum(dim=1) >= 3
            n = valid.sum().clamp(min=1)
            ic = (pearson_per_date(pred, y, mask) * valid).sum() / n
            ric = (rank_ic_per_date(pred, y, mask) * valid).sum() / n
        bs = int(valid.sum())
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=max(bs, 1),
            sync_dist=True,
        )
        self.log(
            f"{stage}/ic", ic, on_epoch=True, on_step=False, batch_size=max(bs, 1), sync_dist=True
        )
        self.log(
            f"{stage}/rank_ic",
            ric,
            on_epoch=True,
            on_step=False,
            prog_bar=stage != "train",
            batch_size=max(bs, 1),
            sync_dist=True,
        )
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # The random draws of a training step (dropout) depend only on (seed, epoch, batch):
        # a run resumed from last.ckpt replays them exactly, however many draws Lightning's
        # loops made before the step (a per-epoch seed was not enough: a resumed epoch's
        # dataloader set-up draws differently from an uninterrupted one's).
        if self.hparams.epoch_seed is not None:
            torch.manual_seed(step_seed(self.hparams.epoch_seed, self.current_epoch, batch_idx))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        if self.hparams.scheduler in (None, "none"):
            return opt
        if self.hparams.scheduler != "cosine":
            raise ConfigError(f"unknown scheduler {self.hparams.scheduler!r}; use cosine or none")
        max_epochs = max(1, int(self.trainer.max_epochs or 1))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class ConstituentModule(RotationModule):
    """Scores industries from their constituents' bar windows (`model.level` stock or pooled).

    `stock`: the loss is the cross-sectional loss over the date's stocks; `pooled`: over
    industries, plus `aux_weight` x the stock loss of the auxiliary head. Logged: `{stage}/loss`,
    `{stage}/rank_ic` (the model's own target: stocks for `stock`, industries for `pooled`),
    `{stage}/stock_rank_ic` and `{stage}/industry_rank_ic`.
    """

    def __init__(
        self,
        net: dict[str, Any],
        loss: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str | None = "cosine",
        epoch_seed: int | None = 0,
        compile: bool = False,
        meta: dict[str, Any] | None = None,
        n_industries: int = 1,
    ) -> None:
        super().__init__(net, loss, lr, weight_decay, scheduler, epoch_seed, compile, meta)

    def build_network(self, cfg: GRUConfig) -> torch.nn.Module:
        from rotation_dl.models.constituents import build_constituent_net

        return build_constituent_net(cfg, int(self.hparams.n_industries))

    def forward(self, x, member, valid, weight):  # type: ignore[override]
        return self._forward(x, member, valid, weight)

    def scores(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(stock scores [B, S'], industry scores [B, N]) of a gathered batch."""
        stock, ind = self(batch["x"], batch["member"], batch["valid"], batch["weight"])
        return stock.float(), ind.float()

    def _ic(self, pred, y, mask) -> tuple[torch.Tensor, int]:
        valid = mask.sum(dim=1) >= 3
        n = valid.sum().clamp(min=1)
        return (rank_ic_per_date(pred, y, mask) * valid).sum() / n, int(valid.sum())

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        stock, ind = self.scores(batch)
        y_s, m_s = batch["y_stock"], batch["m_stock"]
        # an industry counts when it is a target and has a constituent in the batch
        ids = torch.arange(ind.shape[1], device=ind.device)[:, None]
        has = ((batch["member"][:, None, :] == ids) & batch["valid"][:, None, :]).any(dim=2)
        m_i = batch["mask"] & has
        if self.cfg.level == "stock":
            loss = self.loss_fn(stock, y_s, m_s)
        else:
            loss = self.loss_fn(ind, batch["y"], m_i)
            if self.cfg.aux_weight > 0:
                loss = loss + self.cfg.aux_weight * self.loss_fn(stock, y_s, m_s)
        with torch.no_grad():
            s_ic, s_n = self._ic(stock, y_s, m_s)
            i_ic, i_n = self._ic(ind, batch["y"], m_i)
        own, own_n = (s_ic, s_n) if self.cfg.level == "stock" else (i_ic, i_n)
        kw = {"on_epoch": True, "sync_dist": True}
        self.log(f"{stage}/loss", loss, on_step=stage == "train", prog_bar=True,
                 batch_size=max(own_n, 1), **kw)  # fmt: skip
        self.log(f"{stage}/rank_ic", own, on_step=False, prog_bar=stage != "train",
                 batch_size=max(own_n, 1), **kw)  # fmt: skip
        self.log(f"{stage}/stock_rank_ic", s_ic, on_step=False, batch_size=max(s_n, 1), **kw)
        self.log(f"{stage}/industry_rank_ic", i_ic, on_step=False, batch_size=max(i_n, 1), **kw)
        return loss
