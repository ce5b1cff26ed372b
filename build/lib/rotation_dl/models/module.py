"""The Lightning module: one shared step for train/val/test, cross-sectional metrics per stage."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from rotation_dl.errors import ConfigError
from rotation_dl.models.config import GRUConfig, LossConfig
from rotation_dl.models.gru import build_net
from rotation_dl.models.losses import make_loss, pearson_per_date, rank_ic_per_date


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
        self.save_hyperparameters(logger=False)
        self.net = build_net(GRUConfig(**net))
        self.loss_fn = make_loss(LossConfig(**(loss or {})))
        self._forward = torch.compile(self.net) if compile else self.net

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

    def on_train_epoch_start(self) -> None:
        # randomness of an epoch depends only on (seed, epoch): resumed runs replay it exactly
        if self.hparams.epoch_seed is not None:
            L.seed_everything(
                self.hparams.epoch_seed * 1009 + self.current_epoch, workers=True, verbose=False
            )

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
