"""One path for model inputs and one normalisation rule: numpy and torch give the same bits,
windows are exact slices of the panel, and training batches equal what scoring feeds onnx."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

from rotation_dl.features.inputs import gather_windows, model_inputs, panel_inputs
from rotation_dl.features.normalize import NormStats, fit_norm, fit_norm_stats, normalise
from rotation_dl.training.datamodule import PanelDataModule
from rotation_dl.training.walkforward import walk_forward_folds

RNG = np.random.default_rng(7)
STATS = NormStats(
    ("a", "b", "c"), (0.5, -1.0, 3.0), (2.0, 0.25, 7.0), "2024-01-02", "2024-06-28", clip=4.0
)


def raw_panel(days: int = 12, units: int = 5, bars: int = 4) -> np.ndarray:
    x = (RNG.standard_normal((days, units, bars, 3)) * 9).astype(np.float32)
    x[0, 0, 0, 0], x[1, 2, 3, 1], x[2, 1, 0, 2] = np.nan, np.inf, -np.inf
    return x


def test_normalise_by_hand():
    x = np.array([[0.5, -1.0, 3.0], [4.5, 0.0, np.nan], [1e9, -np.inf, np.inf]], np.float32)
    z = normalise(x, STATS)
    assert z.dtype == np.float32
    np.testing.assert_array_equal(z[0], [0, 0, 0])
    np.testing.assert_array_equal(z[1], [2.0, 4.0, 0.0])  # (0 + 1) / 0.25 = 4 = the clip
    np.testing.assert_array_equal(z[2], [4.0, -4.0, 4.0])  # infinities clip, NaN -> 0


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_numpy_and_torch_normalise_to_the_same_bits(dtype):
    x = raw_panel()
    if dtype == "bfloat16":
        xn = x.astype(ml_dtypes.bfloat16)
        xt = torch.from_numpy(xn.view(np.int16)).view(torch.bfloat16)
    else:
        xn = x.astype(dtype)
        xt = torch.from_numpy(xn)
    zn, zt = normalise(xn, STATS), normalise(xt, STATS)
    assert isinstance(zt, torch.Tensor) and zt.dtype == torch.float32
    np.testing.assert_array_equal(zn, zt.numpy())
    assert np.isfinite(zn).all() and np.abs(zn).max() <= STATS.clip


@pytest.mark.parametrize("units", [None, [4, 0, 2]])
def test_windows_are_the_panel_days_before_each_date(tmp_path, units):
    x = raw_panel()
    days, w = [3, 7, 11], 4
    cols = list(range(x.shape[1])) if units is None else units
    want = np.stack([x[d - w + 1 : d + 1][:, cols].transpose(1, 0, 2, 3) for d in days])
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    for panel in (x, mapped):
        np.testing.assert_array_equal(gather_windows(panel, days, w, units), want)
    got = gather_windows(torch.from_numpy(x), torch.tensor(days), w, units)
    np.testing.assert_array_equal(got.numpy(), want)
    assert got.shape == (3, len(cols), w, 4, 3)


def test_model_inputs_carry_the_labels_of_their_days_and_units():
    x = raw_panel()
    label = RNG.standard_normal((12, 5)).astype(np.float32)
    mask = RNG.random((12, 5)) > 0.3
    units = [1, 3]
    a = model_inputs(x, [5, 9], 3, STATS, units, label=label, mask=mask)
    np.testing.assert_array_equal(a.label, label[[5, 9]][:, units])
    np.testing.assert_array_equal(a.mask, mask[[5, 9]][:, units])
    t = model_inputs(
        torch.from_numpy(x), torch.tensor([5, 9]), 3, STATS, torch.tensor(units),
        label=torch.from_numpy(label), mask=torch.from_numpy(mask),
    )  # fmt: skip
    for got, want in ((t.x, a.x), (t.label, a.label), (t.mask, a.mask)):
        np.testing.assert_array_equal(got.numpy(), want)
    assert model_inputs(x, [5], 3, STATS).label is None


def test_fit_norm_skips_non_finite_cells_and_guards_constant_features():
    cells = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, np.nan], [np.inf, 5.0, np.nan]])
    s = fit_norm(cells, ("a", "b", "c"), "2024-01-02", "2024-01-03")
    assert s.mean == (2.0, 5.0, 0.0) and s.std == (1.0, 1.0, 1.0)
    assert (s.fitted_from, s.fitted_to) == ("2024-01-02", "2024-01-03")


@pytest.fixture(scope="module")
def panel(tiny_panel):
    return tiny_panel


def test_industry_statistics_are_the_training_cells_moments(panel):
    days = np.arange(4, 15)
    s = fit_norm_stats(panel.x, days, panel.active, panel.spec.features, panel.dates)
    cells = np.asarray(panel.x)[days][np.asarray(panel.active)[days]].reshape(-1, panel.n_features)
    np.testing.assert_allclose(s.mean, np.nanmean(cells.astype(np.float64), axis=0), rtol=1e-12)
    assert s.fitted_from == str(panel.dates[4]) and s.fitted_to == str(panel.dates[14])


def test_a_training_batch_is_exactly_what_scoring_feeds_the_model(panel):
    fold = walk_forward_folds(
        len(panel.dates), warmup=5, min_train_days=10, val_days=3, retrain_every=5, gap=2
    )[0]
    dm = PanelDataModule(panel, fold, window=4, batch_dates=3)
    dm.setup()
    days = torch.tensor(dm.days["val"][:3])
    batch = dm.gather(days)
    scored = panel_inputs(panel, days.tolist(), 4, dm.norm)
    np.testing.assert_array_equal(batch["x"].numpy(), scored.x)
    np.testing.assert_array_equal(batch["mask"].numpy(), scored.mask)
    np.testing.assert_array_equal(batch["y"].numpy(), np.nan_to_num(scored.label, nan=0.0))
