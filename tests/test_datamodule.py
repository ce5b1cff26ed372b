"""PanelDataModule: windows are exact gathers of the panel, batches hold whole dates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rotation_dl.features.normalize import normalise
from rotation_dl.training.datamodule import EpochSeededSampler, PanelDataModule
from rotation_dl.training.walkforward import walk_forward_folds


@pytest.fixture(scope="module")
def panel(tiny_panel):
    return tiny_panel


@pytest.fixture(scope="module")
def fold(panel):
    return walk_forward_folds(
        len(panel.dates), warmup=5, min_train_days=10, val_days=3, retrain_every=5, gap=2
    )[0]


@pytest.mark.parametrize("on_device", [False, True])
def test_batches_are_exact_windows(panel, fold, on_device):
    dm = PanelDataModule(panel, fold, window=4, batch_dates=3, on_device=on_device)
    dm.setup()
    days = next(iter(dm.val_dataloader()))
    batch = dm.on_after_batch_transfer(dm.on_before_batch_transfer(days, 0), 0)
    B, N, W, P, F = batch["x"].shape
    assert (B, N, W, P, F) == (3, 3, 4, 16, panel.n_features)
    z = normalise(np.asarray(panel.x), dm.norm)
    for b, d in enumerate(batch["day"].tolist()):
        np.testing.assert_array_equal(
            batch["x"][b].numpy(), z[d - 3 : d + 1].transpose(1, 0, 2, 3)
        )
        np.testing.assert_array_equal(batch["mask"][b].numpy(), panel.label_mask()[d])
    assert batch["y"].dtype == torch.float32


def test_day_sets_respect_fold(panel, fold):
    dm = PanelDataModule(panel, fold, window=4)
    dm.setup()
    assert min(dm.days["train"]) >= max(3, fold.train[0]) and max(dm.days["train"]) < fold.train[1]
    assert set(dm.days["val"]) <= set(range(*fold.val))
    assert dm.days["test"] == list(range(*fold.test))
    assert dm.norm.fitted_to == str(panel.dates[fold.train[1] - 1])


def test_sampler_depends_only_on_seed_and_epoch():
    s = EpochSeededSampler(50, seed=3)
    s.set_epoch(2)
    first = list(s)
    s.set_epoch(5)
    assert list(s) != first
    s2 = EpochSeededSampler(50, seed=3)
    s2.set_epoch(2)
    assert list(s2) == first and sorted(first) == list(range(50))


def test_shuffled_labels_keep_marginals(panel, fold):
    dm = PanelDataModule(panel, fold, window=4, shuffle_labels=True)
    dm.setup()
    d = fold.train[0] + 1
    assert sorted(dm._label[d].tolist()) == pytest.approx(sorted(np.nan_to_num(panel.label[d])))
