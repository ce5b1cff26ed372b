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


def test_a_long_history_raises_retrain_every_to_the_fold_cap_and_the_plan_says_so(tmp_path):
    """walkforward.fold_cap: the plan keeps the whole test span in at most that many folds
    (retrain_every raised, said in the plan), times a batch here and gives an estimate."""
    from conftest import SMALL_TRAIN

    from rotation_dl.config import compose_run
    from rotation_dl.stages.train import plan

    base = [f"paths.output_dir={tmp_path / 'o'}", *SMALL_TRAIN, "walkforward.retrain_every=5"]
    free = plan(compose_run([*base, "walkforward.fold_cap=null"]))
    capped = plan(compose_run([*base, "walkforward.fold_cap=3"]))
    assert len(free.folds) > 3 and len(capped.folds) <= 3

    def tested(p) -> set[int]:
        return {d for f in p.folds for d in range(*f.test)}

    assert tested(capped) == tested(free)  # the same out-of-sample days, fewer models
    text = capped.describe()
    assert "retrain_every raised from 5 to" in text and "walkforward.fold_cap=3" in text
    assert "ms per batch" in text and "CPU threads:" in text
    assert "retrain_every raised" not in free.describe()
