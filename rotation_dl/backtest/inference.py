"""Inference for comparisons of several candidates (METHODOLOGY section 5).

Bootstraps, Hansen's SPA test and the model confidence set come from `arch` (a maintained
implementation); the deflated Sharpe ratio (Bailey & Lopez de Prado 2014) and the probability
of backtest overfitting by combinatorially symmetric cross-validation (Bailey, Borwein,
Lopez de Prado & Zhu 2017) are small closed forms written here. Every function takes plain
numpy arrays; a series is one value per date.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

EULER_GAMMA = 0.5772156649015329


def block_length(horizon: int) -> int:
    """Mean block length of the stationary bootstrap for a series of overlapping h-day labels:
    2h, so a block spans the dependence the overlap creates (at least 2)."""
    return max(2, 2 * int(horizon))


def nonoverlapping_t(x: np.ndarray, horizon: int) -> list[float]:
    """The naive t of every `horizon`-th value, for each of the `horizon` first dates taken."""
    out = []
    for offset in range(max(1, horizon)):
        v = np.asarray(x, dtype=float)[offset :: max(1, horizon)]
        v = v[np.isfinite(v)]
        sd = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
        out.append(float(v.mean() / sd * math.sqrt(len(v))) if sd and sd > 0 else float("nan"))
    return out


def bootstrap_ci(
    x: np.ndarray,
    block: int,
    stat: Callable[[np.ndarray], float] = np.mean,
    reps: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile confidence interval of `stat` by the stationary bootstrap (mean block length
    `block`)."""
    return percentile_ci(bootstrap_draws(x, block, stat, reps, seed), level)


def percentile_ci(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of bootstrap draws."""
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_draws(
    x: np.ndarray,
    block: int,
    stat: Callable[[np.ndarray], float] = np.mean,
    reps: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """`reps` values of `stat` over stationary-bootstrap resamples of `x`."""
    from arch.bootstrap import StationaryBootstrap

    x = np.asarray(x, dtype=float)
    bs = StationaryBootstrap(block, x, seed=seed)
    return np.array([stat(data[0][0]) for data in bs.bootstrap(reps)])


def information_ratio(excess: np.ndarray, periods_per_year: int = 252) -> float:
    """Annualised mean / standard deviation of daily excess returns."""
    x = np.asarray(excess, dtype=float)
    x = x[np.isfinite(x)]
    sd = float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")
    return float(x.mean() / sd * math.sqrt(periods_per_year)) if sd and sd > 0 else float("nan")


@dataclass(frozen=True)
class SPAResult:
    benchmark: str
    best: str
    pvalue: float  # Hansen's consistent p-value: H0 no model beats the benchmark
    pvalue_lower: float
    pvalue_upper: float


def spa_test(
    scores: Mapping[str, np.ndarray],
    benchmark: str,
    block: int,
    reps: int = 1000,
    seed: int = 0,
) -> SPAResult:
    """Hansen's test for superior predictive ability on per-date scores (higher is better, e.g.
    rank IC): does the best of the other candidates beat `benchmark`? Losses are -score."""
    from arch.bootstrap import SPA

    others = [n for n in scores if n != benchmark]
    if not others:
        raise ValueError("SPA needs at least one candidate besides the benchmark")
    bench = -np.asarray(scores[benchmark], dtype=float)
    models = -np.column_stack([np.asarray(scores[n], dtype=float) for n in others])
    spa = SPA(bench, models, block_size=block, reps=reps, bootstrap="stationary", seed=seed)
    spa.compute()
    p = spa.pvalues
    best = others[int(np.argmax([np.mean(scores[n]) for n in others]))]
    return SPAResult(benchmark, best, float(p["consistent"]), float(p["lower"]), float(p["upper"]))


def model_confidence_set(
    scores: Mapping[str, np.ndarray],
    block: int,
    size: float = 0.10,
    reps: int = 1000,
    seed: int = 0,
) -> tuple[list[str], dict[str, float]]:
    """Hansen, Lunde & Nason's model confidence set at level 1 - `size` on per-date scores
    (losses -score): the candidates not rejected, and each one's MCS p-value."""
    from arch.bootstrap import MCS

    names = list(scores)
    losses = -np.column_stack([np.asarray(scores[n], dtype=float) for n in names])
    mcs = MCS(losses, size=size, reps=reps, block_size=block, method="R",
              bootstrap="stationary", seed=seed)  # fmt: skip
    mcs.compute()
    included = [names[i] for i in mcs.included]
    pvalues = {names[int(i)]: float(p) for i, p in mcs.pvalues["Pvalue"].items()}
    return included, pvalues


def expected_max_sharpe(n_trials: int, var_sharpe: float) -> float:
    """SR0: the expected maximum of `n_trials` Sharpe ratios with true mean 0 and variance
    `var_sharpe` (Bailey & Lopez de Prado 2014, eq. for the deflated Sharpe's threshold)."""
    from scipy.stats import norm

    if n_trials < 2:
        return 0.0
    z1 = norm.ppf(1 - 1 / n_trials)
    z2 = norm.ppf(1 - 1 / (n_trials * math.e))
    return math.sqrt(var_sharpe) * ((1 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def deflated_sharpe(
    sharpe: float, n_obs: int, skew: float, kurtosis: float, n_trials: int, var_sharpe: float
) -> tuple[float, float]:
    """(SR0, DSR): the probability that the true Sharpe ratio of the selected strategy exceeds
    SR0, given `n_obs` observations of non-normal returns (`kurtosis` is not excess) and the
    selection among `n_trials` trials whose Sharpe ratios vary with `var_sharpe`. All Sharpe
    ratios in the same (per-observation) units."""
    from scipy.stats import norm

    sr0 = expected_max_sharpe(n_trials, var_sharpe)
    denom = 1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe**2
    if n_obs < 2 or denom <= 0:
        return sr0, float("nan")
    z = (sharpe - sr0) * math.sqrt(n_obs - 1) / math.sqrt(denom)
    return sr0, float(norm.cdf(z))


def pbo_cscv(performance: np.ndarray, n_splits: int = 16) -> tuple[float, np.ndarray]:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation.

    `performance` is [T, N]: one column per trial, one row per period (e.g. daily returns or
    ICs). The T rows are cut into `n_splits` (even) blocks; for every choice of half of them
    as in-sample, the trial with the best in-sample Sharpe ratio is ranked out of sample.
    Returns (PBO = the share of choices where it falls at or below the out-of-sample median,
    the logits lambda = log(w / (1 - w)) of its relative ranks w).
    """
    m = np.asarray(performance, dtype=float)
    T, N = m.shape
    if n_splits % 2 or n_splits < 2:
        raise ValueError(f"n_splits must be even and at least 2, got {n_splits}")
    if N < 2 or T < n_splits * 2:
        raise ValueError(f"PBO needs >= 2 trials and >= {2 * n_splits} periods, got {N}, {T}")
    blocks = np.array_split(np.arange(T), n_splits)
    count = np.array([len(b) for b in blocks], dtype=float)
    s1 = np.array([m[b].sum(axis=0) for b in blocks])  # [S, N]
    s2 = np.array([(m[b] ** 2).sum(axis=0) for b in blocks])
    logits = []
    for ins in itertools.combinations(range(n_splits), n_splits // 2):
        mask = np.zeros(n_splits, dtype=bool)
        mask[list(ins)] = True
        sr_in = _sharpe(s1[mask].sum(0), s2[mask].sum(0), count[mask].sum())
        sr_out = _sharpe(s1[~mask].sum(0), s2[~mask].sum(0), count[~mask].sum())
        best = int(np.nanargmax(sr_in))
        rank = (sr_out < sr_out[best]).sum() + 0.5 * ((sr_out == sr_out[best]).sum() - 1) + 1
        w = rank / (N + 1)
        logits.append(math.log(w / (1 - w)))
    lam = np.asarray(logits)
    return float((lam <= 0).mean()), lam


def _sharpe(s1: np.ndarray, s2: np.ndarray, n: float) -> np.ndarray:
    mean = s1 / n
    var = (s2 - n * mean**2) / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(var > 0, mean / np.sqrt(var), np.nan)


def sharpe_moments(x: np.ndarray) -> tuple[float, int, float, float]:
    """(per-period Sharpe ratio, observations, skewness, kurtosis (not excess)) of a series."""
    from scipy.stats import kurtosis, skew

    v = np.asarray(x, dtype=float)
    v = v[np.isfinite(v)]
    sd = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
    sr = float(v.mean() / sd) if sd and sd > 0 else float("nan")
    return sr, len(v), float(skew(v)), float(kurtosis(v, fisher=False))


def selection_summary(
    series: Sequence[np.ndarray], names: Sequence[str], selected: str | None = None
) -> dict:
    """For trials' per-period series of equal length: the selected trial (default: the best by
    Sharpe ratio) with its deflated Sharpe ratio for the number of trials and the dispersion of
    their Sharpe ratios, and the PBO of choosing by in-sample Sharpe among them."""
    m = np.column_stack([np.asarray(s, dtype=float) for s in series])
    stats = [sharpe_moments(m[:, j]) for j in range(m.shape[1])]
    srs = np.array([s[0] for s in stats])
    best = list(names).index(selected) if selected is not None else int(np.nanargmax(srs))
    sr, n, sk, ku = stats[best]
    var = float(np.nanvar(srs, ddof=1)) if len(srs) > 1 else 0.0
    sr0, dsr = deflated_sharpe(sr, n, sk, ku, len(srs), var)
    out = {
        "selected": names[best],
        "trials": len(srs),
        "periods": int(m.shape[0]),
        "sharpe_per_period": sr,
        "sharpe_variance_across_trials": var,
        "sr0": sr0,
        "deflated_sharpe": dsr,
    }
    splits = 16 if m.shape[0] >= 32 else 2 * (m.shape[0] // 4)
    if len(srs) >= 2 and splits >= 2:
        out["pbo"], _ = pbo_cscv(m, splits)
        out["pbo_splits"] = splits
    else:
        out["pbo"] = float("nan")
        out["pbo_note"] = "too few trials or periods for CSCV"
    return out
