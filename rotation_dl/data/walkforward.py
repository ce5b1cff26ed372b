"""Walk-forward folds over the market calendar, purged so no label crosses a boundary.

One fold (expanding window; `gap` = label horizon h, `warmup` = days before the first usable
sample)::

    day 0                                                                         D
    |-- warmup --|========== train ==========|gap|== val ==|gap|==== test ====|
                                                              ^ test_start = k * retrain + first

The next fold moves test_start forward by `retrain` days: with `expanding` its train span starts
at the warm-up again (longer every fold); with `rolling` it keeps the last `train_days` days.
Labels look h days ahead, so the gaps keep every train label's horizon before validation and
every validation label's horizon before the test block. Test blocks tile the calendar from the
first test day to D, so concatenated test scores form one out-of-sample factor panel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from rotation_dl.errors import ConfigError


@dataclass(frozen=True)
class Fold:
    """Half-open day-index ranges [start, end) of one walk-forward step."""

    index: int
    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]

    def to_dict(self) -> dict:
        return asdict(self)


def walk_forward_folds(
    n_days: int,
    *,
    warmup: int,
    min_train_days: int = 120,
    val_days: int = 20,
    retrain_every: int = 20,
    gap: int = 5,
    scheme: Literal["expanding", "rolling"] = "expanding",
    train_days: int | None = None,
    max_folds: int | None = None,
) -> list[Fold]:
    """Folds for a panel of `n_days` days.

    Args:
        n_days: days in the panel.
        warmup: first usable sample day (`FeatureSpec.warmup_days(window)`).
        min_train_days: training days of the first fold.
        val_days: validation tail for early stopping.
        retrain_every: test block length R (a new model every R days).
        gap: purge between blocks (the label horizon).
        scheme: `expanding` or `rolling` (then `train_days`, default `min_train_days`, long).
        max_folds: keep only the last this many folds (None: all).
    """
    first_test = warmup + min_train_days + gap + val_days + gap
    if first_test >= n_days:
        raise ConfigError(
            f"walk-forward needs more than {first_test} days (warm-up {warmup} + train "
            f"{min_train_days} + val {val_days} + 2 x gap {gap}); the panel has {n_days}"
        )
    if retrain_every < 1 or val_days < 1 or min_train_days < 1:
        raise ConfigError("retrain_every, val_days and min_train_days must be positive")
    length = train_days or min_train_days
    folds = []
    for k, start in enumerate(range(first_test, n_days, retrain_every)):
        val_end = start - gap
        val_start = val_end - val_days
        train_end = val_start - gap
        train_start = warmup if scheme == "expanding" else max(warmup, train_end - length)
        folds.append(
            Fold(
                k,
                (train_start, train_end),
                (val_start, val_end),
                (start, min(start + retrain_every, n_days)),
            )
        )
    if max_folds is not None:
        folds = [Fold(i, f.train, f.val, f.test) for i, f in enumerate(folds[-max_folds:])]
    return folds
