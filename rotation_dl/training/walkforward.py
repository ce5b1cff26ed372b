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

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Literal

from rotation_dl.backtest.ic import MIN_DATES as MIN_IC_DATES
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


def first_test_day(warmup: int, min_train_days: int, val_days: int, gap: int) -> int:
    """Index of the first fold's first test day: warm-up, training, purge, validation, purge."""
    return warmup + min_train_days + gap + val_days + gap


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
    first_test = first_test_day(warmup, min_train_days, val_days, gap)
    if first_test >= n_days:
        raise ConfigError(
            f"walk-forward needs at least {first_test + 1} trading days (warm-up {warmup} = "
            f"features.window + features.volume_window/4, train {min_train_days} = "
            f"walkforward.min_train_days, val {val_days} = walkforward.val_days, 2 x purge gap "
            f"{gap} = walkforward.gap, default features.horizon, and one test day; "
            f"{first_test + gap + 1} for a labelled test day); the data have {n_days}: lower "
            "those keys, or use walkforward=short (fits about 100 days)"
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


def plan_text(
    folds: Sequence[Fold],
    dates: Sequence[date],
    *,
    gap: int,
    horizon: int,
    scheme: str,
    show: int = 4,
) -> str:
    """The walk-forward plan in words: each fold's train/val/test date ranges (day counts in
    brackets), the purge gap and the out-of-sample dates, with a warning when fewer than 20 of
    them can carry a label (IC t-statistics are then undefined)."""

    def span(r: tuple[int, int]) -> str:
        a, b = r
        return f"{dates[a]}..{dates[b - 1]} ({b - a:>3})" if b > a else "(empty)"

    first, last = folds[0].test[0], folds[-1].test[1]
    oos = last - first
    labelled = max(0, min(last, len(dates) - horizon) - first)
    lines = [
        f"walk-forward plan: {len(folds)} fold(s), {scheme} train window, purge gap {gap} "
        f"day(s) between blocks; {oos} out-of-sample dates {dates[first]}..{dates[last - 1]}, "
        f"{labelled} with a {horizon}-day label",
        f"  {'fold':>4}  {'train':<29} {'val':<29} {'test':<29}",
    ]
    rows = list(folds)
    if len(rows) > show + 1:
        rows = [*rows[: show // 2], None, *rows[-(show - show // 2) :]]
    for f in rows:
        if f is None:
            lines.append(f"  {'...':>4}")
            continue
        lines.append(f"  {f.index:>4}  {span(f.train):<29} {span(f.val):<29} {span(f.test):<29}")
    if labelled < MIN_IC_DATES:
        lines.append(
            f"  warning: only {labelled} labelled out-of-sample date(s); IC t-statistics need "
            f"{MIN_IC_DATES} and will be NaN (lower walkforward.min_train_days/val_days, or add "
            "history)"
        )
    return "\n".join(lines)
