"""Backtest engine, selection rule, schedules and metrics: hand cases and properties."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotation_dl.backtest.engine import constituent_daily_returns, run_backtest
from rotation_dl.backtest.ic import ic_series, summarize_ic
from rotation_dl.backtest.metrics import (
    calendar_year_table,
    group_returns,
    max_drawdown,
    summarize_performance,
    to_date_excess,
)
from rotation_dl.backtest.schedule import rebalance_dates
from rotation_dl.backtest.selection import SelectionRule, rank_order, select

INDS = ["A", "B", "C"]


def _days(n, start=date(2025, 1, 6)):  # Monday
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += timedelta(days=1)
    return out


def _long(days, mat, name):
    return pl.DataFrame(
        {
            "date": pl.Series([d for d in days for _ in INDS], dtype=pl.Date),
            "industry": INDS * len(days),
            name: np.asarray(mat, dtype=float).reshape(-1),
        }
    )


# ---- selection -----------------------------------------------------------------------------
def test_rank_order_ties_and_missing():
    assert rank_order({"B": 1.0, "A": 1.0, "C": None, "D": 2.0}) == ["D", "A", "B", "C"]


def test_plain_top_k_when_buffer_is_k():
    scores = {c: float(i) for i, c in enumerate("ABCDEFGH")}
    assert select(scores, ["A", "B"], SelectionRule(k=3)) == ["H", "G", "F"]


def test_buffer_keeps_held_within_rank():
    scores = {c: float(i) for i, c in enumerate("ABCDEFGH")}  # H best ... A worst
    # E ranks 4th: kept within buffer 5 although outside top 3; free slots filled by H, G
    assert select(scores, ["E", "A"], SelectionRule(k=3, buffer=5)) == ["H", "G", "E"]


def test_swap_cap_drops_worst_first():
    scores = {c: float(i) for i, c in enumerate("ABCDEFGH")}
    held = ["B", "A", "H"]  # A and B fall outside buffer 4
    out = select(scores, held, SelectionRule(k=3, buffer=4, max_swaps=1))
    assert out == ["H", "G", "B"]  # one swap: A (worst) -> G; B stays
    assert select(scores, held, SelectionRule(k=3, buffer=4)) == ["H", "G", "F"]


def test_exclusions_and_missing_scores():
    scores = {"A": 3.0, "B": 2.0, "C": None, "D": 1.0}
    out = select(scores, ["C"], SelectionRule(k=2, exclude=("A",)))
    assert out == ["B", "D"]


# ---- schedules -----------------------------------------------------------------------------
def test_schedules():
    cal = _days(30)  # 2025-01-06 .. 2025-02-14
    weekly = rebalance_dates(cal, "weekly")
    assert weekly[:2] == [date(2025, 1, 10), date(2025, 1, 17)]
    assert rebalance_dates(cal, "monthly") == [date(2025, 1, 31), date(2025, 2, 14)]
    assert rebalance_dates(cal, "every_n", every_n=10) == [cal[0], cal[10], cal[20]]
    assert rebalance_dates(cal, "dates", dates=[date(2025, 1, 12)]) == [date(2025, 1, 10)]


# ---- engine --------------------------------------------------------------------------------
def test_engine_hand_case_with_drift_and_costs():
    days = _days(5)
    R = np.array(
        [
            [0.0, 0.0, 0.0],
            [0.10, -0.10, 0.0],
            [0.10, 0.10, 0.0],
            [0.0, 0.0, 0.05],
            [-0.05, 0.0, 0.0],
        ]
    )
    S = np.array([[2, 1, 0]] * 3 + [[0, 1, 2]] * 2)  # day 3: C becomes best
    res = run_backtest(
        _long(days, S, "score"),
        _long(days, R, "ret"),
        rule=SelectionRule(k=2),
        schedule="every_n",
        every_n=3,
        cost_rate=0.01,
    )
    port = res.daily["port_ret"].to_list()
    # held A, B from day 0's close: day 1 = mean(.1, -.1) - cost of building (turnover 1)
    assert port[0] == pytest.approx(0.0 - 0.01 * 1.0)
    # day 2: weights drifted to 1.1 / 0.9, both +10%
    assert port[1] == pytest.approx((1.1 * 1.1 + 0.9 * 1.1) / 2.0 - 1)
    assert port[2] == pytest.approx(0.0)  # day 3: the old holdings still earn A, B = 0
    # day 3 close: rebalance to B, C (0.5 each); drifted A 1.21/2.2 leaves, B 0.99/2.2
    w_a, w_b = 1.21 / 2.2, 0.99 / 2.2
    turn = w_a + abs(0.5 - w_b) + 0.5
    assert res.rebalances["turnover"].to_list() == pytest.approx([1.0, turn])
    assert port[3] == pytest.approx((0.0 + 0.0) / 2 - 0.01 * turn)  # day 4: B 0, C 0
    assert res.daily["bench_ret"].to_list() == pytest.approx(R[1:].mean(axis=1).tolist())
    assert res.rebalances["entered"].to_list()[1] == ["C"]
    assert res.rebalances["exited"].to_list()[1] == ["A"]


@settings(max_examples=25, deadline=None)
@given(
    st.integers(2, 6),
    st.integers(5, 25),
    st.integers(0, 10_000),
    st.sampled_from(["daily", "weekly", "every_n"]),
)
def test_properties(n_ind, n_days, seed, schedule):
    rng = np.random.default_rng(seed)
    inds = [f"I{i}" for i in range(n_ind)]
    days = _days(n_days)

    def frame(vals, name):
        return pl.DataFrame(
            {
                "date": pl.Series([d for d in days for _ in inds], dtype=pl.Date),
                "industry": inds * n_days,
                name: vals.reshape(-1),
            }
        )

    rets = frame(rng.normal(0, 0.02, (n_days, n_ind)), "ret")
    scores = frame(rng.normal(0, 1, (n_days, n_ind)), "score")
    k = int(rng.integers(1, n_ind + 1))
    res = run_backtest(
        scores,
        rets,
        rule=SelectionRule(k=k, buffer=int(rng.integers(k, n_ind + 1))),
        schedule=schedule,
        every_n=3,
    )
    w = res.holdings.group_by("date").agg(pl.col("weight").sum())["weight"]
    assert np.allclose(w.to_numpy(), 1.0)
    t = res.rebalances["turnover"].to_numpy()
    assert ((t >= -1e-12) & (t <= 2 + 1e-12)).all()
    everything = run_backtest(scores, rets, rule=SelectionRule(k=n_ind), schedule="daily")
    assert np.abs(everything.daily["excess_ret"].to_numpy()).max() < 1e-12


def test_holdings_do_not_look_ahead():
    rng = np.random.default_rng(1)
    days = _days(30)
    scores = _long(days, rng.normal(size=(30, 3)), "score")
    rets = _long(days, rng.normal(0, 0.01, (30, 3)), "ret")
    t = days[14]
    noisy = scores.with_columns(
        pl.when(pl.col("date") > t)
        .then(-pl.col("score"))
        .otherwise(pl.col("score"))
        .alias("score")
    )
    a = run_backtest(scores, rets, rule=SelectionRule(k=1), schedule="weekly")
    b = run_backtest(noisy, rets, rule=SelectionRule(k=1), schedule="weekly")
    early = pl.col("date") <= t
    assert a.holdings.filter(early).equals(b.holdings.filter(early))
    assert a.daily.filter(early).equals(b.daily.filter(early))
    assert not a.holdings.equals(b.holdings)


def test_constituent_returns_hand_case():
    daily = pl.DataFrame(
        {
            "symbol": ["x", "x", "x", "y", "y", "z", "z"],
            "date": [date(2025, 1, d) for d in (2, 3, 6, 2, 6, 2, 3)],
            "close": [10.0, 11.0, 11.0, 20.0, 22.0, 5.0, 5.0],
            "volume": [1.0] * 6 + [0.0],
        }
    )
    cls = pl.DataFrame(
        {
            "symbol": ["x", "y", "z"],
            "industry": ["A", "A", "A"],
            "start": [None] * 3,
            "end": [None] * 3,
        },
        schema_overrides={"start": pl.Date, "end": pl.Date},
    )
    r = constituent_daily_returns(daily, cls).sort("date")
    # day 3: x +10%, y no close, z suspended (volume 0); day 6: x 0%, y no close on day 3
    assert r["ret"].to_list() == pytest.approx([0.10, 0.0])


# ---- metrics -------------------------------------------------------------------------------
def _daily(port, bench, start=date(2024, 12, 30)):
    days = _days(len(port), start)
    return pl.DataFrame(
        {"date": days, "port_ret": port, "bench_ret": bench, "turnover": [0.0] * len(port)},
        schema_overrides={"date": pl.Date},
    )


def test_performance_hand_case():
    d = _daily([0.10, -0.05, 0.02, 0.01], [0.05, 0.0, 0.01, -0.01])
    s = summarize_performance(d, periods_per_year=4)
    p = 1.1 * 0.95 * 1.02 * 1.01 - 1
    b = 1.05 * 1.0 * 1.01 * 0.99 - 1
    assert s.total_return == pytest.approx(p) and s.benchmark_return == pytest.approx(b)
    assert s.excess_compounded == pytest.approx((1 + p) / (1 + b) - 1)
    assert s.excess_summed == pytest.approx(0.05 - 0.05 + 0.01 + 0.02)
    assert s.hit_rate == pytest.approx(0.75)
    ex = np.array([0.05, -0.05, 0.01, 0.02])
    assert s.information_ratio == pytest.approx(ex.mean() * 4 / (ex.std(ddof=1) * 2))
    enav = np.cumprod([1.1, 0.95, 1.02, 1.01]) / np.cumprod([1.05, 1.0, 1.01, 0.99])
    assert s.max_drawdown_excess == pytest.approx(enav[1] / enav[0] - 1)
    assert max_drawdown(np.array([1.0, 2.0, 1.0, 3.0])) == pytest.approx(-0.5)


def test_calendar_and_to_date_tables():
    d = _daily([0.01, 0.02, -0.01, 0.03], [0.0, 0.01, 0.0, 0.01])  # 2024-12-30 .. 2025-01-02
    years = calendar_year_table(d)
    assert years["year"].to_list() == [2024, 2025]
    assert years["portfolio"][0] == pytest.approx(1.01 * 1.02 - 1)
    assert years["excess_summed"][1] == pytest.approx(-0.01 + 0.02)
    td = to_date_excess(d)
    assert td["ytd"]["days"] == 2
    assert td["ytd"]["excess_compounded"] == pytest.approx(0.99 * 1.03 / 1.01 - 1)
    assert td["week"]["days"] == 4  # Mon 30 Dec .. Thu 2 Jan share an ISO week


def test_ic_and_groups_numpy_oracle():
    rng = np.random.default_rng(3)
    days = _days(20)
    n = 30
    inds = [f"I{i:02d}" for i in range(n)]
    f = rng.normal(size=(20, n))
    r = 0.3 * f + rng.normal(size=(20, n))
    fac = pl.DataFrame(
        {"date": [d for d in days for _ in inds], "industry": inds * 20, "score": f.reshape(-1)},
        schema_overrides={"date": pl.Date},
    )
    ret = fac.select(
        "date",
        "industry",
        pl.Series("fwd_excess", r.reshape(-1)),
        pl.Series("fwd_ret", r.reshape(-1)),
    )
    ic = ic_series(fac, ret)
    rk = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    oracle = [np.corrcoef(rk(f[i]), rk(r[i]))[0, 1] for i in range(20)]
    assert ic["rank_ic"].to_list() == pytest.approx(oracle)
    s = summarize_ic(ic["rank_ic"])
    assert s.t_stat == pytest.approx(np.mean(oracle) / np.std(oracle, ddof=1) * np.sqrt(20))
    g = group_returns(fac, ret)
    assert g["name"].to_list() == ["top", "middle", "bottom"]
    top = np.mean([r[i][np.argsort(f[i])[-10:]].mean() for i in range(20)])
    assert g["mean_return"][0] == pytest.approx(top)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.integers(-3, 3)), min_size=2, max_size=10),
    st.integers(1, 5),
    st.integers(0, 6),
    st.sampled_from([None, 1, 2]),
    st.lists(st.integers(0, 9), max_size=5),
    st.lists(st.integers(0, 9), max_size=2),
)
def test_fast_selection_equals_reference(raw, k, extra, swaps, held_idx, excl_idx):
    """The engine's index-based selection gives exactly the documented rule's holdings
    (ties in integer scores exercise the by-name tie break)."""
    from rotation_dl.backtest.selection import rank_orders, select_indices

    names = [f"I{i}" for i in range(len(raw))]
    scores = np.array([[np.nan if v is None else float(v) for v in raw]])
    held = sorted({h for h in held_idx if h < len(names)})
    exclude = tuple(names[e] for e in excl_idx if e < len(names))
    rule = SelectionRule(k=k, buffer=k + extra, max_swaps=swaps, exclude=exclude)
    ref = select(
        dict(zip(names, [None if v is None else float(v) for v in raw], strict=True)),
        [names[h] for h in held],
        rule,
    )
    order, ranks = rank_orders(scores, names)
    fast = select_indices(
        order[0],
        ranks[0],
        np.isfinite(scores[0]),
        held,
        rule,
        frozenset(names.index(e) for e in exclude),
    )
    assert [names[i] for i in fast] == ref


def test_newey_west_t_against_a_direct_computation():
    """The HAC t of an autocorrelated IC series (overlapping 5-day labels) equals the
    Bartlett-kernel formula written out term by term, and is smaller than the naive t."""
    rng = np.random.default_rng(4)
    e = rng.standard_normal(205)
    x = 0.05 + np.convolve(e, np.ones(5) / 5, mode="valid")[:200] * 0.2  # MA(4): overlap
    s = summarize_ic(pl.Series(x), horizon=5)
    n, m = len(x), x.mean()
    g = [sum((x[t] - m) * (x[t - k] - m) for t in range(k, n)) / n for k in range(5)]
    lrv = g[0] + 2 * sum((1 - k / 5) * g[k] for k in range(1, 5))
    assert s.newey_west_lag == 4
    assert s.t_newey_west == pytest.approx(m / np.sqrt(lrv / n), rel=1e-12)
    assert s.t_newey_west < s.t_stat
    every5 = x[::5]
    assert s.t_non_overlapping == pytest.approx(
        every5.mean() / every5.std(ddof=1) * np.sqrt(len(every5)), rel=1e-12
    )
    assert s.warning is None


def test_too_few_dates_flagged_with_undefined_t():
    s = summarize_ic(pl.Series([0.1, 0.2, -0.05] * 6), horizon=5)  # 18 dates
    assert s.n_dates == 18 and np.isnan(s.t_stat) and np.isnan(s.t_newey_west)
    assert s.warning == "only 18 labelled date(s): too few for a t-stat (needs 20)"
    assert s.mean == pytest.approx(np.mean([0.1, 0.2, -0.05]))


def test_ic_series_gives_the_same_bits_whatever_the_row_order():
    """The per-date correlations sum their rows in (date, industry) order, so shuffled inputs
    and repeated calls agree to the last bit (the join's own order varies run to run)."""
    rng = np.random.default_rng(11)
    days = _days(60)
    inds = [f"I{i:02d}" for i in range(31)]
    fac = pl.DataFrame(
        {
            "date": [d for d in days for _ in inds],
            "industry": inds * len(days),
            "score": rng.normal(size=len(days) * len(inds)),
        },
        schema_overrides={"date": pl.Date},
    )
    ret = fac.select("date", "industry", pl.Series("fwd_excess", rng.normal(size=fac.height)))
    want = ic_series(fac, ret)
    for seed in range(8):
        got = ic_series(fac.sample(fraction=1.0, shuffle=True, seed=seed), ret.reverse())
        assert got.equals(want)
