"""Networks and losses: shapes, masking, numpy oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rotation_dl.errors import ConfigError
from rotation_dl.models.config import LossConfig
from rotation_dl.models.gru import GRUConfig, build_net
from rotation_dl.models.losses import (
    LOSSES,
    ic_loss,
    make_loss,
    masked_rank,
    mse_loss,
    pearson_per_date,
    rank_ic_per_date,
)


@pytest.mark.parametrize("arch", ["flat", "hierarchical"])
@pytest.mark.parametrize("B, N, W, P", [(1, 3, 2, 4), (4, 31, 5, 16)])
def test_shapes(arch, B, N, W, P):
    net = build_net(GRUConfig(n_features=9, arch=arch, hidden=8, layers=2))
    out = net(torch.randn(B, N, W, P, 9))
    assert out.shape == (B, N)


def test_unknown_arch_and_no_features():
    with pytest.raises(ConfigError, match="model.arch='lstm'"):
        GRUConfig(n_features=3, arch="lstm")
    with pytest.raises(ConfigError, match="at least one input feature"):
        build_net(GRUConfig(arch="flat"))


def test_loss_parameters_reach_the_loss():
    """ListNet's temperature from the config changes the loss value (it used to be dropped)."""
    rng = np.random.default_rng(1)
    pred = torch.tensor(rng.standard_normal((3, 8)), dtype=torch.float32)
    y = torch.tensor(rng.standard_normal((3, 8)), dtype=torch.float32)
    mask = torch.ones(3, 8, dtype=torch.bool)
    a = make_loss(LossConfig("listnet", temperature=0.1))(pred, y, mask)
    b = make_loss(LossConfig("listnet", temperature=2.0))(pred, y, mask)
    assert float(a) != pytest.approx(float(b))
    assert float(b) == pytest.approx(float(LOSSES["listnet"](pred, y, mask, temperature=2.0)))
    with pytest.raises(ConfigError, match="temperature"):
        LossConfig("listnet", temperature=0.0)


def _np_rank(a):
    return np.argsort(np.argsort(a)).astype(float)


def test_metrics_match_numpy():
    rng = np.random.default_rng(0)
    pred, y = rng.standard_normal((5, 12)), rng.standard_normal((5, 12))
    mask = rng.random((5, 12)) > 0.2
    t = [torch.tensor(a) for a in (pred, y)]
    ic = pearson_per_date(*t, torch.tensor(mask)).numpy()
    ric = rank_ic_per_date(*t, torch.tensor(mask)).numpy()
    for b in range(5):
        m = mask[b]
        assert ic[b] == pytest.approx(np.corrcoef(pred[b, m], y[b, m])[0, 1], abs=1e-10)
        assert ric[b] == pytest.approx(
            np.corrcoef(_np_rank(pred[b, m]), _np_rank(y[b, m]))[0, 1], abs=1e-10
        )
    ranks = masked_rank(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([[True, False, True]]))
    assert ranks.tolist() == [[1.0, 2.0, 0.0]]


@pytest.mark.parametrize("name", list(LOSSES))
def test_losses_ignore_masked_cells(name):
    pred = torch.randn(3, 8, requires_grad=True)
    y = torch.randn(3, 8)
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[:, -2:] = False
    base = LOSSES[name](pred, y, mask)
    y2 = y.clone()
    y2[:, -2:] = 100.0
    assert torch.allclose(base, LOSSES[name](pred, y2, mask))
    base.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[:, -2:] == 0).all()


def test_loss_values():
    y = torch.tensor([[0.5, 0.0, -0.5]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert ic_loss(y * 2, y, mask).item() == pytest.approx(-1.0)
    assert mse_loss(y, y, mask).item() == 0.0
    assert LOSSES["listnet"](y * 10, y, mask) < LOSSES["listnet"](-y * 10, y, mask)
