"""Trading costs: the A-share stamp-duty schedule, costs of hand-computed trades, break-even."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from rotation_dl.backtest.costs import CostModel, break_even_bps, uniform
from rotation_dl.backtest.engine import run_backtest
from rotation_dl.backtest.metrics import backtest_summary
from rotation_dl.backtest.selection import SelectionRule
from rotation_dl.config import compose_run

ASHARE = compose_run([]).market.costs.model()


def test_ashare_stamp_duty_schedule_by_trade_date():
    days = [date(2008, 9, 18), date(2008, 9, 19), date(2023, 8, 25), date(2023, 8, 27),
            date(2023, 8, 28), date(2025, 1, 2)]  # fmt: skip
    assert ASHARE.stamp_bps(days).tolist() == [0.0, 10.0, 10.0, 10.0, 5.0, 5.0]
    assert ASHARE.each_side_bps == pytest.approx(2.5 + 0.1 + 5.0)
    us = compose_run(["market=us"]).market.costs.model()
    assert us.stamp_bps([date(2024, 6, 3)]).tolist() == [pytest.approx(0.278)]


def test_cost_of_hand_computed_trades():
    # a first formation buys the whole portfolio; a full switch sells it all and buys anew
    buys, sells = np.array([1.0, 1.0, 1.0, 0.5]), np.array([0.0, 1.0, 1.0, 0.5])
    days = [date(2023, 8, 21), date(2023, 8, 25), date(2023, 8, 28), date(2023, 9, 1)]
    got = ASHARE.cost(buys, sells, days) / 1e-4  # in bps
    assert got.tolist() == pytest.approx([7.6, 2 * 7.6 + 10, 2 * 7.6 + 5, 7.6 + 2.5])


def _two_industries():
    """A earns 1% a day, B nothing; A scores higher on odd rebalances, B on even ones, so
    every rebalance after the first is a full switch."""
    cal = pl.date_range(date(2023, 8, 21), date(2023, 9, 1), "1d", eager=True)
    cal = cal.filter(cal.dt.weekday() <= 5)
    rets = pl.DataFrame(
        {
            "date": [d for d in cal for _ in "AB"],
            "industry": ["A", "B"] * len(cal),
            "ret": [r for _ in cal for r in (0.01, 0.0)],
        }  # fmt: skip
    )
    rebal = [cal[0], cal[4], cal[5]]  # 08-21, 08-25 (stamp 10 bps), 08-28 (5 bps)
    scores = pl.DataFrame(
        {
            "date": [d for d in rebal for _ in "AB"],
            "industry": ["A", "B"] * 3,
            "score": [1.0, 0.0, 0.0, 1.0, 1.0, 0.0],
        }  # fmt: skip
    )
    return scores, rets, rebal


def test_engine_charges_each_rebalance_on_its_first_held_day():
    scores, rets, rebal = _two_industries()
    res = run_backtest(scores, rets, rule=SelectionRule(k=1), schedule="dates", dates=rebal,
                       costs=ASHARE)  # fmt: skip
    daily = res.daily.filter(pl.col("cost") > 0)
    assert daily["date"].to_list() == [date(2023, 8, 22), date(2023, 8, 28), date(2023, 8, 29)]
    assert (daily["cost"] / 1e-4).to_list() == pytest.approx([7.6, 25.2, 20.2])
    gap = (res.daily["port_ret_gross"] - res.daily["port_ret"] - res.daily["cost"]).abs().max()
    assert gap < 1e-15


def test_summary_reports_before_and_after_costs_and_the_break_even():
    scores, rets, rebal = _two_industries()
    free = run_backtest(scores, rets, rule=SelectionRule(k=1), schedule="dates", dates=rebal)
    s = backtest_summary(free, scores, rets, horizon=1)
    assert s["performance"] == s["performance_before_costs"]
    be = s["break_even_cost_bps"]
    ex = (free.daily["port_ret"] - free.daily["bench_ret"]).to_numpy()
    assert be == pytest.approx(ex.sum() / free.daily["turnover"].sum() / 1e-4)
    at_be = run_backtest(scores, rets, rule=SelectionRule(k=1), schedule="dates", dates=rebal,
                         costs=uniform(be * 1e-4))  # fmt: skip
    assert at_be.daily["excess_ret"].sum() == pytest.approx(0.0, abs=1e-12)
    taxed = backtest_summary(
        run_backtest(scores, rets, rule=SelectionRule(k=1), schedule="dates", dates=rebal,
                     costs=ASHARE), scores, rets, horizon=1)  # fmt: skip
    assert (
        taxed["performance"]["excess_summed"] < taxed["performance_before_costs"]["excess_summed"]
    )
    assert "stamp duty on sells: 10 bps from 2008-09-19, 5 bps from 2023-08-28" in taxed["costs"]


def test_break_even_without_trades_is_nan_and_bad_schedules_are_refused():
    assert np.isnan(break_even_bps(np.array([0.01]), np.array([0.0])))
    with pytest.raises(ValueError, match="increasing date order"):
        CostModel(stamp_duty=((date(2023, 8, 28), 5.0), (date(2008, 9, 19), 10.0)))
    from rotation_dl.errors import ConfigError

    with pytest.raises(ConfigError, match="market.costs"):
        compose_run(["market.costs.commission_bps=-1"])
