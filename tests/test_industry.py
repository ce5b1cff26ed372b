"""Industry bars: hand-computed values, suspensions, point-in-time classes, adjustment,
look-ahead."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from rotation_dl.errors import DataError, UnmappedSymbolError
from rotation_dl.industry.aggregate import factors_from_adjusted_daily, industry_bars
from rotation_dl.schema import BAR_SCHEMA
from rotation_dl.session import A_SHARE

T = [datetime(2025, 1, 2, 9, 45), datetime(2025, 1, 2, 10, 0), datetime(2025, 1, 2, 10, 15)]


def _bars(rows):
    return pl.DataFrame(rows, schema=BAR_SCHEMA, orient="row").lazy()


def _cls(mapping: dict[str, str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": list(mapping),
            "industry": list(mapping.values()),
            "start": [None] * len(mapping),
            "end": [None] * len(mapping),
        },
        schema={"symbol": pl.String, "industry": pl.String, "start": pl.Date, "end": pl.Date},
    )


@pytest.fixture
def two_stocks():
    # A: 10 -> 11 -> 11 (suspended in bar 3), B: 20 -> 19 -> 19.5
    return _bars(
        [
            ("A", T[0], 10.0, 10.0, 10.0, 10.0, 100.0, 1000.0),
            ("A", T[1], 10.0, 11.5, 10.0, 11.0, 100.0, 3000.0),
            ("A", T[2], 11.0, 11.0, 11.0, 11.0, 0.0, 0.0),
            ("B", T[0], 20.0, 20.0, 20.0, 20.0, 50.0, 1000.0),
            ("B", T[1], 20.0, 20.0, 18.0, 19.0, 50.0, 1000.0),
            ("B", T[2], 19.0, 20.0, 19.0, 19.5, 50.0, 1000.0),
        ]
    )


def test_hand_computed(two_stocks):
    out = industry_bars(two_stocks, _cls({"A": "X", "B": "X"}), weighting="equal").collect()
    b2, b3 = out.row(1, named=True), out.row(2, named=True)
    # bar 2: A +10%, B -5%
    assert b2["n_active"] == 2
    assert b2["ret_ew"] == pytest.approx((0.10 - 0.05) / 2)
    assert b2["ret_aw"] == pytest.approx((3000 * 0.10 + 1000 * -0.05) / 4000)
    assert b2["up_share"] == pytest.approx(0.5)
    assert b2["close"] == pytest.approx(1.025)
    assert b2["high"] == pytest.approx((1.15 + 1.0) / 2)
    assert b2["low"] == pytest.approx((1.0 + 0.9) / 2)
    assert b2["volume"] == 150 and b2["amount"] == 4000
    # bar 3: A suspended -> only B counts (19 -> 19.5)
    assert b3["n_active"] == 1
    assert b3["ret_ew"] == pytest.approx(19.5 / 19 - 1)
    assert b3["close"] == pytest.approx(1.025 * 19.5 / 19)
    assert b3["open"] == pytest.approx(1.025)  # B opened at its previous close


def test_amount_weighting_builds_index_from_ret_aw(two_stocks):
    out = industry_bars(two_stocks, _cls({"A": "X", "B": "X"}), weighting="amount").collect()
    assert out["ret"].to_list()[1] == pytest.approx(out["ret_aw"][1])
    assert out["close"][1] == pytest.approx(1 + out["ret_aw"][1])
    assert (out["high"] >= out["close"] - 1e-12).all() and (
        out["low"] <= out["close"] + 1e-12
    ).all()


def test_bar_with_no_active_constituent(two_stocks):
    out = industry_bars(two_stocks, _cls({"A": "X", "B": "Y"})).collect()
    x3 = out.filter((pl.col("industry") == "X") & (pl.col("ts") == T[2])).row(0, named=True)
    assert x3["n_active"] == 0 and x3["ret_ew"] is None
    assert x3["open"] == x3["high"] == x3["low"] == x3["close"] == pytest.approx(1.1)


def test_point_in_time_classification(two_stocks):
    bars = pl.concat(
        [
            two_stocks.collect(),
            two_stocks.collect().with_columns(pl.col("ts") + pl.duration(days=1)),
        ]
    ).lazy()
    cls = pl.DataFrame(
        {
            "symbol": ["A", "A", "B"],
            "industry": ["X", "Y", "Y"],
            "start": [None, date(2025, 1, 3), None],
            "end": [date(2025, 1, 2), None, None],
        }
    )
    out = industry_bars(bars, cls).collect()
    day1 = out.filter(pl.col("date") == date(2025, 1, 2))
    day2 = out.filter(pl.col("date") == date(2025, 1, 3))
    assert day1.filter(pl.col("industry") == "X")["n_active"].sum() == 2
    assert day2.filter(pl.col("industry") == "X")["n_active"].sum() == 0
    assert day2.filter(pl.col("industry") == "Y")["n_active"].sum() == 5


def test_overlapping_classification_rejected(two_stocks):
    cls = pl.DataFrame(
        {
            "symbol": ["A", "A", "B"],
            "industry": ["X", "Y", "Y"],
            "start": [None, None, None],
            "end": [None, None, None],
        },
        schema={"symbol": pl.String, "industry": pl.String, "start": pl.Date, "end": pl.Date},
    )
    with pytest.raises(DataError, match="two industries"):
        industry_bars(two_stocks, cls).collect()


def test_unmapped_policy(two_stocks):
    with pytest.raises(UnmappedSymbolError) as info:
        industry_bars(two_stocks, _cls({"A": "X"})).collect()
    assert info.value.count == 1 and "'symbol'" in str(info.value)
    out = industry_bars(two_stocks, _cls({"A": "X"}), on_unmapped="drop").collect()
    assert out["industry"].unique().to_list() == ["X"]


def test_adjustment_removes_ex_dividend_gap():
    d1, d2 = datetime(2025, 1, 2, 15, 0), datetime(2025, 1, 3, 9, 45)
    raw = _bars(
        [("A", d1, 10.0, 10.0, 10.0, 10.0, 1.0, 10.0), ("A", d2, 9.0, 9.0, 9.0, 9.0, 1.0, 9.0)]
    )  # 1.0 dividend, no real move
    factors = pl.DataFrame(
        {
            "symbol": ["A", "A"],
            "date": [date(2025, 1, 2), date(2025, 1, 3)],
            "factor": [1.0, 10 / 9],
        }
    )
    plain = industry_bars(raw, _cls({"A": "X"})).collect()
    adj = industry_bars(raw, _cls({"A": "X"}), adjustment=factors).collect()
    assert plain["ret"][1] == pytest.approx(-0.1)
    assert adj["ret"][1] == pytest.approx(0.0)
    # same factors, derived from adjusted daily closes (forward-adjusted: day 1 = 9.0)
    qfq = pl.DataFrame(
        {"symbol": ["A", "A"], "date": [date(2025, 1, 2), date(2025, 1, 3)], "close": [9.0, 9.0]}
    )
    derived = factors_from_adjusted_daily(raw, qfq).collect().sort("date")
    adj2 = industry_bars(raw, _cls({"A": "X"}), adjustment=derived).collect()
    assert adj2["ret"][1] == pytest.approx(0.0)


def test_no_look_ahead(tiny_market):
    """Perturbing every bar after t leaves industry bars at or before t unchanged."""
    bars = tiny_market.bars.filter(pl.col("close") > 0)
    cut = bars["ts"].unique().sort()[200]
    later = pl.col("ts") > cut
    noisy = bars.with_columns(
        [
            pl.when(later).then(pl.col(c) * 1.37).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close", "volume", "amount")
        ]
    )
    kw = dict(adjustment=tiny_market.adj_factors)
    a = industry_bars(bars.lazy(), tiny_market.classification, **kw).collect()
    b = industry_bars(noisy.lazy(), tiny_market.classification, **kw).collect()
    past = pl.col("ts") <= cut
    # polars may sum a group in another order between runs: equal up to float rounding
    assert_frame_equal(
        a.filter(past), b.filter(past), check_exact=False, rel_tol=1e-12, abs_tol=1e-9
    )
    assert not a.filter(~past).equals(b.filter(~past))


def test_industry_bars_on_tiny_market(tiny_market):
    out = industry_bars(
        tiny_market.bars.lazy(), tiny_market.classification, adjustment=tiny_market.adj_factors
    ).collect()
    assert out.height == 3 * 30 * 16
    traded = out.filter(pl.col("n_active") > 0)
    assert traded.null_count().sum_horizontal().item() == 0
    assert ((traded["up_share"] >= 0) & (traded["up_share"] <= 1)).all()
    assert (out["high"] >= out["low"]).all()


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_streamed_build_equals_single_pass(tiny_market, tmp_path, chunk):
    from rotation_dl.data.ingest import ingest_bars
    from rotation_dl.industry.build import build_industry_bars

    tiny_market.bars.write_parquet(tmp_path / "bars.parquet")
    tiny_market.classification.write_parquet(tmp_path / "cls.parquet")
    tiny_market.adj_factors.write_parquet(tmp_path / "adj.parquet")
    ingest_bars(tmp_path / "bars.parquet", tmp_path / "store", session=A_SHARE)
    res = build_industry_bars(
        tmp_path / "store",
        tmp_path / "cls.parquet",
        tmp_path / "ib.parquet",
        adjustment=tmp_path / "adj.parquet",
        chunk_partitions=chunk,
        session=A_SHARE,
    )
    single = industry_bars(
        tiny_market.bars.lazy(), tiny_market.classification, adjustment=tiny_market.adj_factors
    ).collect()
    assert_frame_equal(res.frame, single, check_exact=False, rel_tol=1e-10, abs_tol=1e-12)


def test_derived_factors_change_only_on_corporate_action_days():
    """Vendor closes jitter around the last bar's close (+-0.2%): the factor keeps its level
    there and moves only on the 3% ex-dividend day; a streamed build (carry) equals one pass."""
    days = [date(2025, 3, 3) + timedelta(days=k) for k in range(10)]
    rng = np.random.default_rng(0)
    raw_close = 10 * np.cumprod(1 + rng.normal(0, 0.01, 10))
    raw = _bars(
        [("A", datetime.combine(d, datetime.min.time()) + timedelta(hours=15), c, c, c, c, 1.0, c)
         for d, c in zip(days, raw_close, strict=True)]
    )  # fmt: skip
    level = np.where(np.arange(10) < 6, 0.97, 1.0)  # forward-adjusted: 3% dividend on day 6
    jitter = 1 + np.array([0, 0.002, -0.0015, 0, 0.001, 0, 0, -0.002, 0.0018, 0])
    qfq = pl.DataFrame({"symbol": "A", "date": days, "close": raw_close * level * jitter})
    f = factors_from_adjusted_daily(raw, qfq).collect().sort("date")
    assert f["factor"].n_unique() == 2
    changes = f.filter(pl.col("factor") != pl.col("factor").shift(1))["date"].to_list()
    assert changes == [days[6]]
    assert f["factor"][6] / f["factor"][5] == pytest.approx(1 / 0.97, rel=3e-3)
    first = factors_from_adjusted_daily(raw.filter(pl.col("ts").dt.date() < days[4]), qfq)
    first = first.collect()
    carry = first.sort("date").tail(1).select("symbol", "r", "factor")
    second = factors_from_adjusted_daily(
        raw.filter(pl.col("ts").dt.date() >= days[4]), qfq, carry=carry
    ).collect()
    assert pl.concat([first, second]).sort("date")["factor"].to_list() == f["factor"].to_list()


def test_tick_rounding_of_a_low_priced_stock_does_not_move_its_factor():
    """A 1.50 stock whose vendor rounds the adjusted close to 0.01: one tick either way is 0.67%,
    above the 0.5% tolerance, on days with no corporate action. The factor keeps its level;
    a 10% ex-date still moves it."""
    days = [date(2025, 3, 3) + timedelta(days=k) for k in range(8)]
    raw_close = np.array([1.503, 1.497, 1.506, 1.494, 1.502, 1.498, 1.505, 1.501])
    raw = _bars(
        [("A", datetime.combine(d, datetime.min.time()) + timedelta(hours=15), c, c, c, c, 1.0, c)
         for d, c in zip(days, raw_close, strict=True)]
    )  # fmt: skip
    level = np.where(np.arange(8) < 6, 0.9, 1.0)  # a 10% dividend on day 6
    qfq = pl.DataFrame({"symbol": "A", "date": days,
                        "close": np.round(raw_close * level, 2)})  # fmt: skip
    r = qfq["close"].to_numpy() / raw_close
    assert (np.abs(r[1:6] / r[:5] - 1) > 0.005).any()  # the jitter a plain 0.5% test mistakes
    f = factors_from_adjusted_daily(raw, qfq).collect().sort("date")
    changes = f.filter(pl.col("factor") != pl.col("factor").shift(1))["date"].to_list()
    assert changes == [days[6]]
