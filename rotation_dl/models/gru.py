"""GRU networks that turn an industry's window of intraday bars into one score.

Input is always x [B, N, W, P, F]: B dates, N industries, W days, P bars per day, F features;
output is scores [B, N]. Industries share weights (the cross-section is a batch dimension).

* `flat`: one GRU over the W*P bar sequence.
* `hierarchical`: an intraday GRU encodes each day's P bars into a day vector, a second GRU runs
  over the W day vectors.
"""

from __future__ import annotations

import torch
from torch import nn

from rotation_dl.errors import ConfigError
from rotation_dl.models.config import GRUConfig

__all__ = ["FlatGRU", "GRUConfig", "HierarchicalGRU", "build_net"]


def _gru(n_in: int, hidden: int, layers: int, dropout: float) -> nn.GRU:
    return nn.GRU(
        n_in, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
    )


class FlatGRU(nn.Module):
    """One GRU over the whole W*P bar sequence, last hidden state -> linear score."""

    def __init__(self, cfg: GRUConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.gru = _gru(cfg.n_features, cfg.hidden, cfg.layers, cfg.dropout)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, 1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N, W, P, F] -> last hidden state [B, N, H]."""
        B, N, W, P, F = x.shape
        out, _ = self.gru(x.reshape(B * N, W * P, F))  # [B*N, W*P, H]
        return out[:, -1].reshape(B, N, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x)).squeeze(-1)


class HierarchicalGRU(nn.Module):
    """Intraday GRU per day -> day vectors [W, Hd] -> day-level GRU -> linear score."""

    def __init__(self, cfg: GRUConfig) -> None:
        super().__init__()
        self.cfg = cfg
        day_hidden = cfg.day_hidden or cfg.hidden
        self.intraday = _gru(cfg.n_features, day_hidden, 1, 0.0)
        self.daily = _gru(day_hidden, cfg.hidden, cfg.layers, cfg.dropout)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, 1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N, W, P, F] -> last day-level hidden state [B, N, H]."""
        B, N, W, P, F = x.shape
        day_out, _ = self.intraday(x.reshape(B * N * W, P, F))  # [B*N*W, P, Hd]
        days = day_out[:, -1].reshape(B * N, W, -1)
        out, _ = self.daily(days)  # [B*N, W, H]
        return out[:, -1].reshape(B, N, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x)).squeeze(-1)


def build_net(cfg: GRUConfig) -> nn.Module:
    """The network named by `cfg.arch`."""
    if cfg.n_features < 1:
        raise ConfigError(f"the network needs at least one input feature, got {cfg.n_features}")
    if cfg.arch == "flat":
        return FlatGRU(cfg)
    if cfg.arch == "hierarchical":
        return HierarchicalGRU(cfg)
    raise ConfigError(f"unknown model.arch {cfg.arch!r}; use 'flat' or 'hierarchical'")
