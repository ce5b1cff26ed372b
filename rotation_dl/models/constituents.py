"""Constituent-level networks: the shared GRU encoders read every stock's bars.

Input x [B, S, W, P, F] (B dates, S stocks), member [B, S] (industry index, -1 none), valid
[B, S] (the stock traded that day), weight [B, S] (the day's amount); output
(stock scores [B, S], industry scores [B, N]).

* `StockScorer` (`model.level=stock`): the encoder scores every stock; the industry score is an
  aggregate of its constituents' scores on that date (`aggregate`):
  `mean`, `zmean` (scores z-scored across the date's stocks first), `amount_weighted` (by the
  day's amount) or `median`.
* `PooledScorer` (`model.level=pooled`): the encoder turns each constituent's window into a
  vector; masked attention pooling and mean pooling over the industry's constituents on that
  date give the industry vector, a head scores it. An auxiliary linear head scores stocks (its
  loss weight is `model.aux_weight`).

Industries with no valid constituent in the batch get score 0 and are masked by `counts`.
"""

from __future__ import annotations

import torch
from torch import nn

from rotation_dl.models.config import GRUConfig
from rotation_dl.models.gru import build_net


def membership(member: torch.Tensor, valid: torch.Tensor, n_industries: int) -> torch.Tensor:
    """One-hot membership [B, N, S] (float) of valid stocks."""
    ids = torch.arange(n_industries, device=member.device)
    return ((member[:, None, :] == ids[None, :, None]) & valid[:, None, :]).float()


def aggregate_scores(
    scores: torch.Tensor,
    member: torch.Tensor,
    valid: torch.Tensor,
    n_industries: int,
    how: str = "mean",
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stock scores [B, S] -> (industry scores [B, N], constituent counts [B, N])."""
    onehot = membership(member, valid, n_industries)  # [B, N, S]
    counts = onehot.sum(dim=2)
    s = scores.float()
    if how == "median":
        nan = torch.full_like(onehot, float("nan"))
        grid = torch.where(onehot > 0, s[:, None, :].expand_as(onehot), nan)
        med = torch.nanmedian(grid, dim=2).values
        return torch.nan_to_num(med, nan=0.0), counts
    if how == "zmean":
        v = valid.float()
        n = v.sum(dim=1, keepdim=True).clamp(min=1)
        mu = (s * v).sum(dim=1, keepdim=True) / n
        sd = (((s - mu) ** 2 * v).sum(dim=1, keepdim=True) / n).sqrt().clamp(min=1e-6)
        s = (s - mu) / sd
    w = onehot
    if how == "amount_weighted":
        if weight is None:
            raise ValueError("amount_weighted aggregation needs the stocks' amounts")
        w = onehot * weight.float().clamp(min=0)[:, None, :]
        w = torch.where(w.sum(dim=2, keepdim=True) > 0, w, onehot)  # no amount: equal weights
    total = w.sum(dim=2).clamp(min=1e-12)
    return torch.bmm(w, s[:, :, None]).squeeze(2) / total, counts


class StockScorer(nn.Module):
    """Per-stock GRU scores, aggregated to industries."""

    def __init__(self, cfg: GRUConfig, n_industries: int) -> None:
        super().__init__()
        self.cfg, self.n_industries = cfg, n_industries
        self.encoder = build_net(cfg)

    def forward(
        self, x: torch.Tensor, member: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        stock = self.encoder(x)  # [B, S]
        ind, _ = aggregate_scores(
            stock, member, valid, self.n_industries, self.cfg.aggregate, weight
        )
        return stock, ind


class PooledScorer(nn.Module):
    """Constituent vectors -> masked attention + mean pooling per industry -> industry score."""

    def __init__(self, cfg: GRUConfig, n_industries: int) -> None:
        super().__init__()
        self.cfg, self.n_industries = cfg, n_industries
        self.encoder = build_net(cfg)
        h = cfg.hidden
        self.attn = nn.Linear(h, 1)
        self.head = nn.Sequential(
            nn.Dropout(cfg.dropout), nn.Linear(2 * h, h), nn.GELU(), nn.Linear(h, 1)
        )
        self.stock_head = nn.Linear(h, 1)

    def forward(
        self, x: torch.Tensor, member: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder.encode(x)  # [B, S, H]
        onehot = membership(member, valid, self.n_industries)  # [B, N, S]
        logits = self.attn(h).squeeze(-1).float()  # [B, S]
        neg = torch.finfo(logits.dtype).min / 2
        scored = torch.where(onehot > 0, logits[:, None, :].expand_as(onehot), neg)
        attn = torch.softmax(scored, dim=2) * (onehot.sum(dim=2, keepdim=True) > 0)
        mean = onehot / onehot.sum(dim=2, keepdim=True).clamp(min=1)
        hf = h.float()
        pooled = torch.cat([torch.bmm(attn, hf), torch.bmm(mean, hf)], dim=2)  # [B, N, 2H]
        ind = self.head(pooled).squeeze(-1)
        stock = self.stock_head(h).squeeze(-1)
        return stock, ind


def build_constituent_net(cfg: GRUConfig, n_industries: int) -> nn.Module:
    """The constituent network for `cfg.level` (`stock` or `pooled`)."""
    if cfg.level == "pooled":
        return PooledScorer(cfg, n_industries)
    return StockScorer(cfg, n_industries)
