"""Each methodology convention pinned on hand-computed inputs: turnover over held rebalances,
both excess conventions, timing over the signal's life, the DI options and the micro-cap
universes."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from rotation_dl.backtest.engine import run_backtest
from rotation_dl.backtest.metrics import backtest_summary, summarize_performance
from rotation_dl.backtest.selection import SelectionRule
from rotation_dl.baselines.diffusion import diffusion_index
from rotation_dl.baselines.timing import (
    SignalConfig,
    run_timing,
    signal_start,
    signal_states,
    timing_backtest,
    trailing_amount,
    universe_mask,
)
from rotation_dl.data.matrix import close_matrix
from rotation_dl.errors import ConfigError

DAYS = [date(2025, 1, 6) + timedelta(days=k) for k in range(40)]


def _returns(rets: dict[str, list[float]]) -> pl.DataFrame:
    n = len(next(iter(rets.values())))
    return pl.DataFrame(
        [(DAYS[t], i, r[t]) for i, r in rets.items() for t in range(n)],
        schema=["date", "industry", "ret"],
        orient="row",
    )


# ---- turnover and excess ----------------------------------------------------------------------


def test_turnover_counts_held_rebalances_only_and_reports_next_holdings():
    """Daily rebalancing, k=1 of A/B/C over 4 days with flat returns: A, then B (turnover 2),
    then B (0), then C on the last day (never held: the next holdings, not traded)."""
    returns = _returns({"A": [0.0] * 4, "B": [0.0] * 4, "C": [0.0] * 4})
    best = ["A", "B", "B", "C"]
    factors = pl.DataFrame(
        [(DAYS[t], i, 1.0 if i == best[t] else 0.0) for t in range(4) for i in "ABC"],
        schema=["date", "industry", "score"],
        orient="row",
    )
    res = run_backtest(factors, returns, rule=SelectionRule(k=1), schedule="daily")
    assert res.rebalances["turnover"].to_list() == [1.0, 2.0, 0.0, 2.0]
    assert res.rebalances["held"].to_list() == [True, True, True, False]
    summary = backtest_summary(res, factors, returns, horizon=1)
    assert summary["performance"]["mean_turnover"] == pytest.approx(1.0)  # (2 + 0) / 2
    assert summary["next_holdings"] == ["C"]


def test_both_excess_conventions_by_hand():
    """Portfolio +1% a day for 126 days (half a year), benchmark +0.5%: totals and annual
    figures, geometric (ratio) and arithmetic (difference)."""
    n = 126
    daily = pl.DataFrame(
        {"date": DAYS[:1] * n, "port_ret": [0.01] * n, "bench_ret": [0.005] * n}
    ).with_columns(pl.Series("date", [DAYS[0] + timedelta(days=k) for k in range(n)]))
    s = summarize_performance(daily)
    p, b = 1.01**n - 1, 1.005**n - 1
    a, ab = (1 + p) ** 2 - 1, (1 + b) ** 2 - 1  # half a year of 252 days
    assert s.excess_compounded == pytest.approx((1 + p) / (1 + b) - 1)
    assert s.excess_total_arithmetic == pytest.approx(p - b)
    assert s.excess_summed == pytest.approx(n * 0.005)
    assert s.annual_excess == pytest.approx((1 + a) / (1 + ab) - 1)
    assert s.annual_excess_arithmetic == pytest.approx(a - ab)
    assert s.annual_excess_arithmetic > s.annual_excess  # the difference overstates the ratio


# ---- timing over the signal's life ------------------------------------------------------------


def test_threshold_machine_is_flat_until_its_first_signal():
    di = np.array([np.nan, np.nan, 0.5, 0.95, 0.5, 0.05, 0.5])
    assert signal_start(di, "first_threshold") == 2
    st = signal_states(di, "first_threshold", SignalConfig(upper=0.9, lower=0.1))
    assert st.tolist() == [0, 0, 1, 0, 0, 1, 1]  # long from day 2 (the initial entry)
    ret = np.array([0.10, 0.10, 0.01, 0.02, 0.03, 0.04, 0.05])
    dates = DAYS[:7]
    frame, s = timing_backtest(dates, ret, st, "first_threshold", start=2)
    # held on days 3 (state of close 2) and 6 (state of close 5); days 0..2 are before the life
    assert s.total_return == pytest.approx(1.02 * 1.05 - 1)
    assert s.buy_hold_return == pytest.approx(1.02 * 1.03 * 1.04 * 1.05 - 1)
    assert s.signal_start == str(dates[2]) and s.initial_entry and s.initial_state == 1
    assert s.trades == 2  # long -> flat on day 3, flat -> long on day 5; the entry not counted
    assert s.exposure == pytest.approx(2 / 4)
    assert frame["strategy_nav"][2] == 1.0  # nothing earned before the start


def test_dual_ma_starts_when_both_averages_exist():
    cfg = SignalConfig(fast=2, slow=3)
    di = np.array([np.nan, 0.2, 0.4, 0.6, 0.5, 0.1, 0.1])
    start = signal_start(di, "dual_ma", cfg)
    assert start == 3  # slow MA of 3 finite values first on day 3
    st = signal_states(di, "dual_ma", cfg)
    # day 3: fast (0.4+0.6)/2=0.5 > slow 0.4 -> 1; day 4: 0.55 > 0.5 -> 1;
    # day 5: 0.3 < 0.4 -> 0; day 6: 0.1 < 0.233 -> 0
    assert st.tolist() == [0, 0, 0, 1, 1, 0, 0]


def test_signal_log_has_one_row_per_switch_and_no_initial_entry():
    rng = np.random.default_rng(3)
    rows = []
    for s in range(30):
        px = 10 * np.exp(np.cumsum(rng.normal(0, 0.03, 80)))
        rows += [
            (f"{600000 + s}.SH", DAYS[0] + timedelta(days=t), float(px[t])) for t in range(80)
        ]
    daily = pl.DataFrame(rows, schema=["symbol", "date", "close"], orient="row").with_columns(
        pl.lit(1e6).alias("volume"), (pl.col("close") * 1e6).alias("amount")
    )
    out = run_timing(daily, universe="all", lag=5, cfg=SignalConfig(upper=0.7, lower=0.3))
    log = out["signals"]
    assert log.columns == ["date", "machine", "state", "di"]
    for machine in ("first_threshold", "delayed_threshold", "dual_ma"):
        series = out["series"]["state_" + machine].to_numpy()
        stat = next(s for s in out["stats"] if s["machine"] == machine)
        mine = log.filter(pl.col("machine") == machine)
        assert (
            mine.height
            == stat["trades"]
            == int(np.abs(np.diff(series)).sum()) - (1 if stat["initial_entry"] else 0)
        )
        assert mine["date"].min() is None or str(mine["date"].min()) > stat["signal_start"]


# ---- DI options -------------------------------------------------------------------------------


def _daily(closes: dict[str, list[float | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(s, DAYS[t], c) for s, cs in closes.items() for t, c in enumerate(cs) if c is not None],
        schema=["symbol", "date", "close"],
        orient="row",
    ).with_columns(pl.lit(1.0).alias("volume"))


CLS = pl.DataFrame({"symbol": ["a", "b"], "industry": ["X", "X"]}).with_columns(
    pl.lit(None, pl.Date).alias("start"), pl.lit(None, pl.Date).alias("end")
)


def test_multi_horizon_per_lag_and_per_stock_differ_by_hand():
    """K=2 on day 2. a: 1, 2, 3 (up over both lags); b: 5, (none), 4 (down over lag 2, no lag-1
    close). per_lag: lag 1 share over {a} = 1, lag 2 share over {a, b} = 0.5 -> 0.75.
    per_stock: a averages 1 over 2 lags, b 0 over the 1 lag it has -> (1 + 0) / 2 = 0.5."""
    daily = _daily({"a": [1, 2, 3], "b": [5, None, 4]})
    per_lag = diffusion_index(daily, CLS, "multi_horizon", k=2, multi_horizon="per_lag")
    per_stock = diffusion_index(daily, CLS, "multi_horizon", k=2, multi_horizon="per_stock")
    assert per_lag.sort("date")["di"][2] == pytest.approx(0.75)
    assert per_stock.sort("date")["di"][2] == pytest.approx(0.5)
    assert per_lag.sort("date")["di"][1] is None  # lag 2 undefined on day 1: undefined


def test_above_ma_minimum_valid_closes():
    """k=3 on day 3. a: 1, 2, (none), 4: the window 2, _, 4 has 2 valid closes; by default (all
    3 needed) a is left out; with min_valid=2 its SMA is 3 over what is there and 4 > 3."""
    daily = _daily({"a": [1, 2, None, 4], "b": [3, 3, 3, 2]})
    full = diffusion_index(daily, CLS, "above_ma", k=3).sort("date")
    loose = diffusion_index(daily, CLS, "above_ma", k=3, above_ma_min_valid=2).sort("date")
    assert full["di"][3] == pytest.approx(0.0)  # only b (2 < 8/3)
    assert full["n"][3] == 1
    assert loose["di"][3] == pytest.approx(0.5) and loose["n"][3] == 2
    with pytest.raises(ConfigError, match="minimum valid closes"):
        diffusion_index(daily, CLS, "above_ma", k=3, above_ma_min_valid=4)


# ---- micro-cap universes ------------------------------------------------------------------------


def test_trailing_amount_uses_only_previous_days():
    amount = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0], [1e9, 10.0]])
    got = trailing_amount(amount, window=2)
    assert np.isnan(got[0]).all()  # nothing before day 0
    assert got[2].tolist() == [2.0, 10.0]  # mean of days 0 and 1
    assert got[3].tolist() == [4.0, 10.0]  # day 3's own huge amount is not used


def test_smallest_amount_universe_is_point_in_time():
    """Three stocks; on each day the one with the lowest mean amount over the previous 2 days is
    the universe; changing a day's own amount never changes that day's universe."""
    m = close_matrix(
        pl.DataFrame(
            [(s, DAYS[t], 10.0) for t in range(6) for s in ("x", "y", "z")],
            schema=["symbol", "date", "close"],
            orient="row",
        )
    )
    amounts = np.array([[5, 1, 9], [5, 1, 9], [5, 9, 1], [5, 9, 1], [1, 9, 9], [1, 9, 9]], float)
    uni = universe_mask(m, 1, amounts=amounts, amount_window=2)
    picked = [m.symbols[int(np.argmax(u))] if u.any() else None for u in uni]
    # day 3: x 5, y (1 + 9) / 2 = 5, z (9 + 1) / 2 = 5: a tie, the first wins; day 5: x (5 + 1)
    # / 2 = 3 < z 5 < y 9
    assert picked == [None, "y", "y", "x", "z", "x"]
    bumped = amounts.copy()
    bumped[4, 0] = 1e9  # day 4's own amount
    assert (universe_mask(m, 1, amounts=bumped, amount_window=2)[4] == uni[4]).all()


def test_universe_choices_need_their_inputs():
    daily = _daily({"a": [1.0, 2.0, 3.0]}).with_columns(pl.lit(1.0).alias("amount"))
    with pytest.raises(ConfigError, match="smallest_cap needs share counts"):
        run_timing(daily, universe="smallest_cap", lag=1)
    with pytest.raises(ConfigError, match="universe=list needs timing.constituents"):
        run_timing(daily, universe="list", lag=1)
    assert "smallest by 20-day mean traded amount" in run_timing(daily, lag=1)["universe"]
