"""Inference for comparisons: the deflated Sharpe ratio's worked example, PBO, SPA, MCS, the
stationary bootstrap, and the Newey-West t against statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rotation_dl.backtest.ic import newey_west_t
from rotation_dl.backtest.inference import (
    bootstrap_ci,
    deflated_sharpe,
    expected_max_sharpe,
    model_confidence_set,
    nonoverlapping_t,
    pbo_cscv,
    selection_summary,
    spa_test,
)


def test_deflated_sharpe_reproduces_the_papers_worked_example():
    """Bailey & Lopez de Prado (2014): 1,250 daily returns, annual SR 2.5, skew -3, kurtosis
    10, 100 trials whose annual Sharpe ratios vary by 0.5 -> SR0 = 0.1132, DSR = 0.9004."""
    sr = 2.5 / math.sqrt(250)
    sr0, dsr = deflated_sharpe(sr, 1250, -3.0, 10.0, 100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert dsr == pytest.approx(0.9004, abs=5e-4)
    assert expected_max_sharpe(1, 0.1) == 0.0


def test_pbo_is_a_coin_flip_on_iid_noise_near_one_without_skill_and_near_zero_with_it():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, (480, 30))
    pbo, lam = pbo_cscv(noise, 12)
    assert len(lam) == math.comb(12, 6) and 0.3 < pbo < 0.7  # the IS winner is a random pick
    # no skill at all: every trial's mean over the whole sample is exactly zero, so what wins
    # in sample must lose out of sample
    demeaned = noise - noise.mean(axis=0)
    assert pbo_cscv(demeaned, 12)[0] > 0.9
    planted = noise.copy()
    planted[:, 7] += 0.004  # one trial with a real edge
    assert pbo_cscv(planted, 12)[0] < 0.05


def test_spa_small_for_a_planted_signal_large_for_noise():
    """Under the null (no candidate better than the benchmark) the p-value is spread over
    [0, 1] and rarely small; with one real edge it is small."""
    n = 500
    pvalues = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        bench = rng.normal(0.0, 0.1, n)
        noise = {f"m{i}": rng.normal(0.0, 0.1, n) for i in range(5)}
        r = spa_test({"momentum": bench, **noise}, "momentum", block=10, reps=300, seed=0)
        pvalues.append(r.pvalue)
    assert np.median(pvalues) > 0.2 and np.mean(np.array(pvalues) < 0.05) <= 0.2, pvalues
    signal = {**noise, "good": rng.normal(0.05, 0.1, n)}
    r = spa_test({"momentum": bench, **signal}, "momentum", block=10, reps=500, seed=0)
    assert r.pvalue < 0.01 and r.best == "good" and r.benchmark == "momentum"


def test_mcs_keeps_the_best_and_drops_the_clearly_worse():
    rng = np.random.default_rng(2)
    n = 400
    scores = {"good": rng.normal(0.06, 0.1, n), "also_good": rng.normal(0.06, 0.1, n),
              "bad": rng.normal(-0.05, 0.1, n)}  # fmt: skip
    included, pvalues = model_confidence_set(scores, block=10, size=0.10, reps=500, seed=0)
    assert "bad" not in included and "good" in included and set(pvalues) == set(scores)


def test_stationary_bootstrap_ci_covers_the_mean_and_widens_with_dependence():
    rng = np.random.default_rng(3)
    x = rng.normal(0.05, 0.1, 600)
    lo, hi = bootstrap_ci(x, block=2, reps=800, seed=0)
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * 0.1 / math.sqrt(600), 0.3)
    overlapping = np.convolve(rng.normal(0, 0.1, 605), np.ones(5) / 5, "valid")  # MA(4)
    narrow = np.subtract(*bootstrap_ci(overlapping, block=2, reps=800, seed=0)[::-1])
    wide = np.subtract(*bootstrap_ci(overlapping, block=10, reps=800, seed=0)[::-1])
    assert wide > 1.3 * narrow


def test_newey_west_t_matches_statsmodels_hac():
    import statsmodels.api as sm

    rng = np.random.default_rng(4)
    x = np.convolve(rng.normal(0.02, 0.1, 304), np.ones(5) / 5, "valid")
    for lag in (0, 1, 4, 9):
        fit = sm.OLS(x, np.ones_like(x)).fit(
            cov_type="HAC", cov_kwds={"maxlags": lag, "use_correction": False}
        )
        assert newey_west_t(x, lag) == pytest.approx(float(fit.tvalues[0]), rel=1e-10)


def test_nonoverlapping_t_per_offset_and_selection_summary():
    x = np.arange(20, dtype=float) % 5 - 1.5  # offsets see different subsamples
    ts = nonoverlapping_t(x, 5)
    assert len(ts) == 5 and all(math.isnan(t) for t in ts)  # each offset's values are constant
    rng = np.random.default_rng(5)
    trials = [rng.normal(0, 0.01, 256) for _ in range(8)]
    s = selection_summary(trials, [f"t{i}" for i in range(8)])
    assert s["trials"] == 8 and 0 <= s["deflated_sharpe"] <= 1 and 0 <= s["pbo"] <= 1
