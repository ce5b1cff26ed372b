"""Resampling is exact and composes: 1 -> 5 -> 15 equals 1 -> 15."""

from __future__ import annotations

from datetime import datetime, time

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from rotation_dl.data.resample import resample_bars
from rotation_dl.errors import ConfigError
from rotation_dl.schema import BAR_SCHEMA
from rotation_dl.session import A_SHARE, Session
from rotation_dl.synthetic.market import SampleConfig, make_sample_market


@pytest.fixture(scope="module")
def minute_bars():
    return make_sample_market(
        SampleConfig(n_industries=2, n_stocks=8, n_days=3, bar_minutes=1, seed=2)
    ).bars.filter(pl.col("close") > 0)


def test_hand_case():
    rows = [
        ("A", datetime(2025, 1, 2, 9, 31 + k), 10 + k, 11 + k, 9 + k, 10.5 + k, 100.0, 1e3)
        for k in range(5)
    ]
    df = pl.DataFrame(rows, schema=BAR_SCHEMA, orient="row")
    out = resample_bars(df.lazy(), 5, source_minutes=1, session=A_SHARE).collect()
    assert out.height == 1
    r = out.row(0, named=True)
    assert r["ts"] == datetime(2025, 1, 2, 9, 35)
    assert (r["open"], r["high"], r["low"], r["close"]) == (10, 15, 9, 14.5)
    assert (r["volume"], r["amount"]) == (500.0, 5e3)


@pytest.mark.parametrize(
    "every, ends",
    [
        (5, 48),
        (15, 16),
        (30, 8),
        (60, 4),
    ],
)
def test_bar_counts_and_sums(minute_bars, every, ends):
    out = resample_bars(minute_bars.lazy(), every, source_minutes=1, session=A_SHARE).collect()
    per_day = out.group_by("symbol", pl.col("ts").dt.date()).len()["len"]
    assert per_day.max() == ends
    assert out["volume"].sum() == pytest.approx(minute_bars["volume"].sum())
    assert (out["high"] >= out[["open", "close"]].max_horizontal()).all()
    assert (out["low"] <= out[["open", "close"]].min_horizontal()).all()


def test_hourly_bar_ends(minute_bars):
    out = resample_bars(minute_bars.lazy(), 60, source_minutes=1, session=A_SHARE).collect()
    assert sorted(out["ts"].dt.time().unique()) == [
        time(10, 30),
        time(11, 30),
        time(14, 0),
        time(15, 0),
    ]


def test_composes(minute_bars):
    direct = resample_bars(minute_bars.lazy(), 15, source_minutes=1, session=A_SHARE).collect()
    two_step = resample_bars(
        resample_bars(minute_bars.lazy(), 5, A_SHARE, source_minutes=1),
        15,
        source_minutes=5,
        session=A_SHARE,
    ).collect()
    assert_frame_equal(direct, two_step, check_exact=False, rel_tol=1e-12)


def test_daily(minute_bars):
    out = resample_bars(minute_bars.lazy(), "1d", session=A_SHARE).collect()
    assert out.columns[:2] == ["symbol", "date"]
    last = (
        minute_bars.sort("ts")
        .group_by("symbol", pl.col("ts").dt.date().alias("date"))
        .agg(pl.col("close").last())
    )
    merged = out.join(last, on=["symbol", "date"], suffix="_m")
    assert (merged["close"] == merged["close_m"]).all()


def test_invalid_target():
    with pytest.raises(ConfigError, match="multiple"):
        resample_bars(pl.LazyFrame(schema=BAR_SCHEMA), 7, source_minutes=5, session=A_SHARE)


def test_session_clock_roundtrip():
    s = A_SHARE
    assert s.length == 240 and s.bars_per_day(15) == 16
    assert [t.strftime("%H:%M") for t in s.bar_end_times(60)] == [
        "10:30",
        "11:30",
        "14:00",
        "15:00",
    ]
    ts = pl.Series(
        [datetime(2025, 1, 2, 9, 45), datetime(2025, 1, 2, 13, 15), datetime(2025, 1, 2, 12, 0)]
    )
    clock = pl.select(s.clock(pl.lit(ts))).to_series()
    assert clock.to_list() == [15, 135, None]
    back = pl.select(s.clock_to_ts(pl.lit(ts).dt.date(), pl.lit(clock))).to_series()
    assert back.to_list()[:2] == ts.to_list()[:2]
    with pytest.raises(ConfigError):
        Session.from_strings([["13:00", "15:00"], ["09:30", "11:30"]])
