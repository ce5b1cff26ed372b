"""Walk-forward folds: purged, ordered, tiling the out-of-sample period."""

from __future__ import annotations

import pytest

from rotation_dl.errors import ConfigError
from rotation_dl.training.walkforward import walk_forward_folds


@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
def test_fold_invariants(scheme):
    folds = walk_forward_folds(
        300, warmup=25, min_train_days=100, val_days=20, retrain_every=30, gap=5, scheme=scheme
    )
    assert folds[0].test[0] == 25 + 100 + 5 + 20 + 5
    assert folds[-1].test[1] == 300
    for a, b in zip(folds, folds[1:], strict=False):
        assert a.test[1] == b.test[0]
    for f in folds:
        assert f.train[0] >= 25 and f.train[0] < f.train[1]
        assert f.val[0] - f.train[1] == 5 and f.test[0] - f.val[1] == 5
        assert f.val[1] - f.val[0] == 20
        if scheme == "rolling":
            assert f.train[1] - f.train[0] == 100
    if scheme == "expanding":
        assert all(f.train[0] == 25 for f in folds)
        assert folds[-1].train[1] - folds[-1].train[0] > 100


def test_max_folds_and_too_short():
    folds = walk_forward_folds(300, warmup=25, max_folds=2, retrain_every=30)
    assert [f.index for f in folds] == [0, 1] and folds[-1].test[1] == 300
    with pytest.raises(ConfigError, match="walk-forward needs at least"):
        walk_forward_folds(100, warmup=25)
