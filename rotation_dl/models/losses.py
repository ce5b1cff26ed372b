"""Cross-sectional losses and metrics over [B dates, N industries] with a validity mask."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from rotation_dl.errors import ConfigError
from rotation_dl.models.config import LossConfig


def _masked_center(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = mask.to(x.dtype)
    n = m.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (x * m).sum(dim=1, keepdim=True) / n
    return (x - mean) * m, n


def pearson_per_date(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per date [B] (0 where fewer than 3 valid industries)."""
    pc, n = _masked_center(pred, mask)
    yc, _ = _masked_center(y, mask)
    cov = (pc * yc).sum(dim=1)
    denom = (pc.pow(2).sum(dim=1) * yc.pow(2).sum(dim=1)).sqrt().clamp(min=1e-12)
    corr = cov / denom
    return torch.where(n.squeeze(1) >= 3, corr, torch.zeros_like(corr))


def masked_rank(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Ranks 0..k-1 of the valid entries in each row (invalid entries sort last)."""
    big = torch.finfo(x.dtype).max
    filled = torch.where(mask, x, torch.full_like(x, big))
    return filled.argsort(dim=1).argsort(dim=1).to(x.dtype)


def rank_ic_per_date(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per date [B]."""
    return pearson_per_date(masked_rank(pred, mask), masked_rank(y, mask), mask)


def mse_loss(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over valid cells (labels are rank-normalised)."""
    m = mask.to(pred.dtype)
    return ((pred - y).pow(2) * m).sum() / m.sum().clamp(min=1)


def ic_loss(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Negative mean per-date Pearson IC."""
    return -pearson_per_date(pred, y, mask).mean()


def listnet_loss(
    pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """Listwise ranking loss: cross-entropy between softmax(y / T) and softmax(pred) per date."""
    neg = torch.finfo(pred.dtype).min / 2
    target = torch.softmax(torch.where(mask, y / temperature, torch.full_like(y, neg)), dim=1)
    logp = torch.log_softmax(torch.where(mask, pred, torch.full_like(pred, neg)), dim=1)
    per_date = -(target * torch.where(mask, logp, torch.zeros_like(logp))).sum(dim=1)
    valid = mask.any(dim=1).to(pred.dtype)
    return (per_date * valid).sum() / valid.sum().clamp(min=1)


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: dict[str, LossFn] = {
    "mse": mse_loss,
    "ic": ic_loss,
    "listnet": listnet_loss,
}


def make_loss(cfg: LossConfig) -> LossFn:
    """The loss named by `cfg.name` with its parameters bound (e.g. ListNet's temperature)."""
    if cfg.name not in LOSSES:
        raise ConfigError(f"unknown loss {cfg.name!r}; choose from {list(LOSSES)}")
    return functools.partial(LOSSES[cfg.name], **cfg.params())
