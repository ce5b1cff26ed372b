"""The dense-grid day statistics equal polars' own group-by and rolling-window formulations
(the definitions they replace for speed) on a hostile frame: missing days, a key absent for
a stretch, null values, two bars in one slot, keys interleaved."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from rotation_dl.features.daygrid import (
    dense_ids,
    previous_day_close,
    trailing_slot_means,
    with_day_statistics,
)


def _frame(seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for day in range(30):
        for key in ("A", "B", "C", "D"):
            if key == "B" and 8 <= day < 15:  # suspended: no rows for a week
                continue
            if rng.random() < 0.1:  # a missing day
                continue
            for slot in range(4):
                if rng.random() < 0.1:  # a missing bar
                    continue
                close = None if rng.random() < 0.05 else float(rng.uniform(5, 50))
                volume = None if rng.random() < 0.05 else float(rng.uniform(0, 1e6))
                rows.append((key, day, slot, day * 10 + slot, close, volume))
                if key == "D" and slot == 2 and day % 7 == 0:  # two bars in one slot
                    rows.append((key, day, slot, day * 10 + slot, 7.0, 3.0))
    df = pl.DataFrame(rows, schema=["industry", "date", "_slot", "ts", "close", "volume"],
                      orient="row")  # fmt: skip
    return df.sort("ts", "industry")  # keys interleaved, each in time order


def _reference(df: pl.DataFrame, window: int) -> pl.DataFrame:
    lf = df.lazy().with_columns(pl.col("date").rank("dense").cast(pl.Int64).alias("_day"))
    day_close = (
        lf.group_by("industry", "date")
        .agg(pl.col("close").last().alias("_dc"))
        .sort("industry", "date")
        .with_columns(pl.col("_dc").shift(1).over("industry").alias("_prev_day_close"))
        .drop("_dc")
    )
    base = pl.col("volume").rolling_mean_by(
        "_day", window_size=f"{window}i", min_samples=max(1, window // 4), closed="left"
    )
    return (
        lf.join(day_close, on=["industry", "date"], how="left", maintain_order="left")
        .with_columns(base.over("industry", "_slot").alias("_base_volume"))
        .collect()
    )


@pytest.mark.parametrize("window", [1, 4, 9])
def test_day_statistics_equal_polars_group_by_and_rolling_windows(window):
    df = _frame()
    want = _reference(df, window)
    got = with_day_statistics(
        df.lazy().with_columns(pl.col("date").rank("dense").cast(pl.Int64).alias("_day")),
        ["volume"],
        window,
    ).collect()
    assert got.height == df.height
    for col in ("_prev_day_close", "_base_volume"):
        a, b = got[col], want[col]
        assert (a.is_null() == b.is_null()).all(), col
        np.testing.assert_allclose(a.drop_nulls(), b.drop_nulls(), rtol=1e-12, err_msg=col)
    assert got["_base_volume"].null_count() < got.height  # the windows do fill
    # B after its suspension: the previous close is its last close before it
    b = got.filter((pl.col("industry") == "B") & (pl.col("date") >= 15)).head(1)
    last = df.filter((pl.col("industry") == "B") & (pl.col("date") < 8)).tail(1)["close"]
    assert b["_prev_day_close"].to_list() == last.to_list()


def test_a_day_value_does_not_depend_on_where_the_frame_starts():
    """More look-back (a frame starting earlier) gives bit-identical values on shared days."""
    df = _frame(1)
    key = df["industry"].cast(pl.Categorical).to_physical().cast(pl.Int64).to_numpy()
    slot, day = df["_slot"].to_numpy(), df["date"].to_numpy()
    vol = df["volume"].fill_null(np.nan).to_numpy()
    close = df["close"].fill_null(np.nan).to_numpy()
    late = day >= 6
    full = trailing_slot_means(key, slot, day, [vol], 5, 1)[0]
    part = trailing_slot_means(key[late], slot[late], day[late], [vol[late]], 5, 1)[0]
    shared = day[late] >= 11  # days whose windows lie inside both frames
    np.testing.assert_array_equal(full[late][shared], part[shared])
    pdc = previous_day_close(key, day, close)[late]
    pdc_late = previous_day_close(key[late], day[late], close[late])
    first = (
        df.filter(pl.col("date") >= 6)
        .with_columns(
            (pl.col("date") > pl.col("date").min().over("industry")).alias("after_first")
        )["after_first"]
        .to_numpy()
    )  # a key's first day in the late frame has no earlier day
    np.testing.assert_array_equal(pdc[first], pdc_late[first])
    assert np.isnan(pdc_late[~first]).all()


def test_dense_ids_keep_value_order():
    np.testing.assert_array_equal(dense_ids(np.array([7, 3, 7, 100, 3])), [1, 0, 1, 2, 0])
