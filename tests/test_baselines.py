"""Diffusion index, micro-cap timing and the factor IC monitor: hand cases, bounds, causality."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotation_dl.baselines.diffusion import VARIANTS, di_rankings, diffusion_index
from rotation_dl.baselines.factor_ic import builtin_factors, top_bottom, weekly_factor_ic
from rotation_dl.baselines.timing import (
    SignalConfig,
    critical_grid,
    run_timing,
    signal_states,
    universe_di,
    universe_mask,
)
from rotation_dl.data.matrix import close_matrix
from rotation_dl.data.resample import resample_bars
from rotation_dl.session import A_SHARE


def _days(n):
    d0 = date(2025, 1, 1)
    return [d0 + timedelta(days=i) for i in range(n)]


def _daily(closes: dict[str, list[float | None]]):
    n = len(next(iter(closes.values())))
    rows = [
        (s, d, c)
        for s, cs in closes.items()
        for d, c in zip(_days(n), cs, strict=True)
        if c is not None
    ]
    return pl.DataFrame(
        rows, schema={"symbol": pl.String, "date": pl.Date, "close": pl.Float64}, orient="row"
    )


CLS = pl.DataFrame(
    {
        "symbol": ["a", "b", "c"],
        "industry": ["X", "X", "Y"],
        "start": [None] * 3,
        "end": [None] * 3,
    },
    schema_overrides={"start": pl.Date, "end": pl.Date},
)


def test_lag_variant_hand_case():
    daily = _daily({"a": [1, 2, 3, 2], "b": [5, 4, None, 6], "c": [1, 1, 1, 1]})
    di = diffusion_index(daily, CLS, "lag", k=2).sort("date", "industry")
    x = di.filter(pl.col("industry") == "X")["di"].to_list()
    # day 2: a 3 > 1 (b has no close) -> 1.0; day 3: a 2 > 2? no; b 6 > 4 yes -> 0.5
    assert x == [None, None, 1.0, 0.5]
    y = di.filter(pl.col("industry") == "Y")["di"].to_list()
    assert y[2:] == [0.0, 0.0]  # strict comparison: equal closes do not count


def test_multi_horizon_hand_case():
    daily = _daily({"a": [1, 3, 2, 4], "b": [1, 1, 1, 1], "c": [1, 1, 1, 1]})
    di = diffusion_index(daily, CLS, "multi_horizon", k=3).sort("date", "industry")
    x = di.filter(pl.col("industry") == "X")["di"].to_list()
    # day 3, a: 4 > 2, 4 > 3, 4 > 1 -> 1; b: 0 -> DI 0.5
    assert x[3] == pytest.approx(0.5)
    assert x[:3] == [None, None, None]


def test_above_ma_and_ema():
    daily = _daily({"a": [1, 2, 3, 4, 1], "b": [4, 3, 2, 1, 5], "c": [1, 1, 1, 1, 1]})
    di = diffusion_index(daily, CLS, "above_ma", k=4).sort("date", "industry")
    x = di.filter(pl.col("industry") == "X")["di"].to_list()
    assert x[3] == pytest.approx(0.5)  # a 4 > mean(1..4); b 1 < mean
    assert x[4] == pytest.approx(0.5)  # a 1 < 2.5; b 5 > 2.75
    lag = diffusion_index(daily, CLS, "lag", k=1).filter(pl.col("industry") == "X").sort("date")
    ema = (
        diffusion_index(daily, CLS, "ema", k=1, ema_span=3)
        .filter(pl.col("industry") == "X")
        .sort("date")
    )
    a = 2 / (3 + 1)
    expected = lag["di"][1]
    for t in range(2, 5):
        expected = a * lag["di"][t] + (1 - a) * expected
    assert ema["di"][4] == pytest.approx(expected)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(VARIANTS))
def test_di_bounded(seed, variant):
    rng = np.random.default_rng(seed)
    closes = {
        s: [
            float(v) if rng.random() > 0.1 else None
            for v in np.exp(np.cumsum(rng.normal(0, 0.02, 40)))
        ]
        for s in "abc"
    }
    di = diffusion_index(_daily(closes), CLS, variant, k=5)["di"].drop_nulls()
    assert ((di >= 0) & (di <= 1)).all()


def test_rankings_and_changes():
    di = pl.DataFrame(
        {
            "date": [date(2025, 1, 3)] * 3 + [date(2025, 1, 10)] * 3,
            "industry": ["X", "Y", "Z"] * 2,
            "di": [0.5, 0.5, 0.2, 0.1, 0.6, 0.3],
        }
    )
    r = di_rankings(di, [date(2025, 1, 3), date(2025, 1, 10)])
    first = r.filter(pl.col("date") == date(2025, 1, 3))
    assert first["industry"].to_list() == ["X", "Y", "Z"]  # tie broken by name
    second = r.filter(pl.col("date") == date(2025, 1, 10)).sort("industry")
    assert second["di_change"].to_list() == pytest.approx([-0.4, 0.1, 0.1])
    assert second["rank_change"].to_list() == [-2, 1, 1]


def test_di_no_look_ahead(tiny_market):
    daily = resample_bars(
        tiny_market.bars.filter(pl.col("close") > 0).lazy(), "1d", A_SHARE
    ).collect()
    t = daily["date"].unique().sort()[15]
    noisy = daily.with_columns(
        pl.when(pl.col("date") > t)
        .then(pl.col("close") * 3)
        .otherwise(pl.col("close"))
        .alias("close")
    )
    for v in VARIANTS:
        a = diffusion_index(daily, tiny_market.classification, v, k=5)
        b = diffusion_index(noisy, tiny_market.classification, v, k=5)
        assert a.filter(pl.col("date") <= t).equals(b.filter(pl.col("date") <= t))


# ---- timing --------------------------------------------------------------------------------
def test_first_threshold_machine():
    di = np.array([0.5, 0.95, 0.5, 0.05, 0.5])
    assert signal_states(di, "first_threshold").tolist() == [1, 0, 0, 1, 1]


def test_delayed_threshold_machine():
    di = np.array([0.5, 0.95, 0.92, 0.85, 0.5, 0.05, 0.08, 0.2])
    assert signal_states(di, "delayed_threshold").tolist() == [1, 1, 1, 0, 0, 0, 0, 1]


def test_dual_ma_machine():
    di = np.array([0.1, 0.2, 0.3, 0.4, 0.3, 0.1, 0.0])
    cfg = SignalConfig(fast=2, slow=3, initial=0)
    # ma2 vs ma3 from day 2: (.25 > .2) 1, (.35 > .3) 1, (.35 > .3333) 1, (.2 < .2667) 0, 0
    assert signal_states(di, "dual_ma", cfg).tolist() == [0, 0, 1, 1, 1, 0, 0]


def test_signal_states_no_look_ahead():
    rng = np.random.default_rng(0)
    di = rng.random(60)
    noisy = di.copy()
    noisy[30:] = rng.random(30)
    for m in ("first_threshold", "delayed_threshold", "dual_ma"):
        assert (signal_states(di, m)[:30] == signal_states(noisy, m)[:30]).all()


def test_universe_and_grid():
    daily = _daily({"a": [10.0] * 21 + [11.0], "b": [10.0] * 21 + [9.5], "c": [1.0] * 22})
    m = close_matrix(daily)
    caps = m.close * np.array([1.0, 1.0, 1000.0])[None, :]  # c is the big one
    uni = universe_mask(m, n_smallest=2, caps=caps)
    assert uni[-1].tolist() == [True, True, False]
    di = universe_di(m, uni, lag=20)
    assert di[-1] == pytest.approx(0.5)
    grid = critical_grid(m, uni, len(m.dates) - 1)
    row20 = grid.filter(pl.col("T") == 20)
    assert row20["x1.00"][0] == pytest.approx(di[-1])  # cell (1.00, 20) is today's DI
    assert row20["x1.10"][0] == pytest.approx(1.0) and row20["x0.90"][0] == pytest.approx(0.0)
    assert grid["T"].to_list() == list(range(20, 9, -1))


def test_run_timing_on_sample(tiny_market):
    daily = resample_bars(
        tiny_market.bars.filter(pl.col("close") > 0).lazy(), "1d", A_SHARE
    ).collect()
    out = run_timing(daily, universe_size=10, shares=tiny_market.stocks, lag=5)
    assert out["series"]["universe_size"].max() == 10
    assert {s["machine"] for s in out["stats"]} == {
        "first_threshold",
        "delayed_threshold",
        "dual_ma",
    }
    di = out["series"]["di"].drop_nulls()
    assert ((di >= 0) & (di <= 1)).all()


# ---- factor IC -----------------------------------------------------------------------------
def test_factor_ic_monitor(tiny_market):
    daily = resample_bars(
        tiny_market.bars.filter(pl.col("close") > 0).lazy(), "1d", A_SHARE
    ).collect()
    f = builtin_factors(daily, tiny_market.stocks, year=10).collect()
    assert {
        "log_cap",
        "log_cap_cubed",
        "volatility_1y",
        "beta_1y",
        "ret_10d",
        "amihud_20d",
        "turnover_20d",
        "price_level",
    } <= set(f.columns)
    user = f.select("symbol", "date", (-pl.col("ret_10d")).alias("my_reversal"))
    ic, summary = weekly_factor_ic(daily, f.join(user, on=["symbol", "date"]), trailing=2)
    a = summary.filter(pl.col("factor") == "ret_10d")["mean"][0]
    b = summary.filter(pl.col("factor") == "my_reversal")["mean"][0]
    assert a == pytest.approx(-b)
    tb = top_bottom(summary, 2)
    assert len(tb["top"]) == 2 and set(tb["top"]).isdisjoint(tb["bottom"])
    assert ((ic["rank_ic"].drop_nulls().abs()) <= 1).all()


def test_builtin_factors_match_per_stock_reference(tiny_market):
    """Window factors are computed per stock in date order, whatever order joins leave rows in
    (a shares join once shuffled them: ret_10d was off by up to 1.0, and runs disagreed)."""
    daily = resample_bars(
        tiny_market.bars.filter(pl.col("close") > 0).lazy(), "1d", A_SHARE
    ).collect()
    shuffled = daily.sample(fraction=1.0, shuffle=True, seed=3)
    runs = [builtin_factors(shuffled, tiny_market.stocks, year=10).collect() for _ in range(2)]
    got = runs[0].sort("symbol", "date")
    from polars.testing import assert_frame_equal

    # runs agree (to float reduction order: the market mean behind beta is a parallel sum)
    assert_frame_equal(got, runs[1].sort("symbol", "date"), check_exact=False, rel_tol=1e-9)
    for sym, part in daily.sort("symbol", "date").group_by("symbol", maintain_order=True):
        close = part["close"].to_numpy()
        ref = np.full(len(close), np.nan)
        ref[10:] = close[10:] / close[:-10] - 1
        mine = got.filter(pl.col("symbol") == sym[0])["ret_10d"].fill_null(np.nan).to_numpy()
        np.testing.assert_allclose(mine, ref, rtol=1e-12, equal_nan=True)


def test_next_open_execution_hand_case():
    from rotation_dl.baselines.timing import timing_backtest

    dates = _days(4)
    ret = np.array([0.0, 0.10, 0.05, -0.02])  # close-to-close
    overnight = np.array([0.0, 0.04, 0.01, -0.03])
    intraday = np.array([0.0, 0.0577, 0.0396, 0.0103])
    states = np.array([1, 0, 1, 1])  # decided at each close
    close_frame, _ = timing_backtest(dates, ret, states, "m", "close")
    assert close_frame["strategy_ret"].to_list() == pytest.approx([0.0, 0.10, 0.0, -0.02])
    frame, _ = timing_backtest(
        dates, ret, states, "m", "next_open", overnight=overnight, intraday=intraday
    )
    # day 1: bought at day 1's open -> session only; day 2: held overnight (state of close 0),
    # sold at the open (state of close 1 = 0); day 3: bought back at day 3's open
    expected = [0.0, 0.0577, 0.01, 0.0103]
    assert frame["strategy_ret"].to_list() == pytest.approx(expected)


def test_run_timing_next_open(tiny_market):
    daily = resample_bars(
        tiny_market.bars.filter(pl.col("close") > 0).lazy(), "1d", A_SHARE
    ).collect()
    a = run_timing(daily, universe_size=10, shares=tiny_market.stocks, lag=5)
    b = run_timing(
        daily, universe_size=10, shares=tiny_market.stocks, lag=5, execution="next_open"
    )
    assert a["series"].equals(b["series"])  # same signals, different fills
    assert a["stats"] != b["stats"]
