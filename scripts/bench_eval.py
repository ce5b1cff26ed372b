"""Benchmark: rank IC vs alphalens-reloaded, a 200-configuration backtest sweep vs vectorbt.

Writes outputs/bench/eval.json. Same synthetic inputs for both sides, measured in one run:

* IC: 6 factors x 31 industries x 2,500 days, per-date Spearman rank IC against 5-day forward
  returns. rotation_dl: `ic_series` per factor (polars). alphalens: `factor_information_
  coefficient` on factor_data prepared beforehand (preparation not timed).
* Sweep: k x buffer x schedule = 200 configurations of the buffered top-k rule. rotation_dl:
  `run_backtest_grid` (scores and returns aligned once; selection + simulation per configuration).
  vectorbt: `Portfolio.from_orders`
  with target-percent weights taken from our selections, all 200 configurations in one
  grouped call, after a warm-up call compiles numba (selection not timed for vectorbt).

Agreement: max |rank IC difference| over all dates and factors; max |NAV difference| over all
configurations and days (tolerance 1e-9 for both).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from rotation_dl.backtest.engine import run_backtest, run_backtest_grid
from rotation_dl.backtest.ic import ic_series
from rotation_dl.backtest.selection import SelectionRule

REPO = Path(__file__).resolve().parents[1]


def make_inputs(n_ind: int, n_days: int, n_factors: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    days, d = [], date(2010, 1, 4)
    while len(days) < n_days:
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    inds = [f"IND{i:02d}" for i in range(n_ind)]
    rets = rng.normal(0.0003, 0.015, (n_days, n_ind))
    fwd = np.full_like(rets, np.nan)
    growth = np.cumprod(1 + rets, axis=0)
    fwd[:-5] = growth[5:] / growth[:-5] - 1
    factors = {
        f"f{j}": 0.1 * np.nan_to_num(fwd) + rng.normal(size=rets.shape) for j in range(n_factors)
    }
    long = pl.DataFrame(
        {
            "date": pl.Series(np.repeat(np.asarray(days, dtype="datetime64[D]"), n_ind)).cast(
                pl.Date
            ),
            "industry": np.tile(inds, n_days),
            "ret": rets.reshape(-1),
            "fwd_ret": fwd.reshape(-1),
            **{k: v.reshape(-1) for k, v in factors.items()},
        }
    ).with_columns(pl.col("fwd_ret").fill_nan(None))
    return days, inds, long, growth


def bench_ic(long: pl.DataFrame, names: list[str], repeat: int = 3) -> dict:
    import pandas as pd  # noqa: TID251 - the peer being measured
    from alphalens.performance import factor_information_coefficient

    def ours():
        return {f: ic_series(long, long, factor_col=f, return_col="fwd_ret") for f in names}

    pdf = long.drop_nulls("fwd_ret").to_pandas()
    pdf["date"] = pd.to_datetime(pdf["date"])
    prepared = {}
    for f in names:
        fd = pdf.set_index(["date", "industry"])[[f, "fwd_ret"]].rename(
            columns={f: "factor", "fwd_ret": "5D"}
        )
        fd["factor_quantile"] = 1
        prepared[f] = fd

    def theirs():
        return {f: factor_information_coefficient(prepared[f]) for f in names}

    t_ours = min(_timed(ours) for _ in range(repeat))
    t_theirs = min(_timed(theirs) for _ in range(repeat))
    a, b = ours(), theirs()
    diff = 0.0
    for f in names:
        mine = a[f].select("date", "rank_ic").to_pandas().set_index("date")["rank_ic"]
        mine.index = pd.to_datetime(mine.index)
        diff = max(diff, float((mine - b[f]["5D"]).abs().max()))
    return {
        "ic_seconds": t_ours,
        "alphalens_seconds": t_theirs,
        "ic_speedup_vs_alphalens": t_theirs / t_ours,
        "max_abs_diff_ic": diff,
    }


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def sweep_configs(n_ind: int) -> list[tuple[int, int, str]]:
    ks = [3, 4, 5, 6, 8]
    buffers = [0, 2, 4, 6, 8, 10, 12, 14, 16, 20]  # extra ranks beyond k
    schedules = ["weekly", "monthly", "every_n", "daily"]
    return [(k, min(k + b, n_ind), s) for k, b, s in itertools.product(ks, buffers, schedules)]


def bench_sweep(days, inds, long, growth) -> dict:
    import pandas as pd  # noqa: TID251 - the peer being measured
    import vectorbt as vbt

    configs = sweep_configs(len(inds))
    factors = long.select("date", "industry", pl.col("f0").alias("score"))
    returns = long.select("date", "industry", "ret")

    sweep = [{"k": k, "buffer": b, "schedule": s, "every_n": 10} for k, b, s in configs]
    t0 = time.perf_counter()
    table, navs = run_backtest_grid(factors, returns, sweep)
    t_ours = time.perf_counter() - t0
    # the holdings of each configuration, for vectorbt (not timed)
    ours = [
        run_backtest(factors, returns, rule=SelectionRule(k=k, buffer=b), schedule=s, every_n=10)
        for k, b, s in configs
    ]

    # vectorbt: same holdings as target-percent orders at each rebalance close
    price = pd.DataFrame(growth, index=pd.to_datetime(days), columns=inds)
    cols, weights = [], []
    for c, res in enumerate(ours):
        w = np.full((len(days), len(inds)), np.nan)
        pos = {d: i for i, d in enumerate(days)}
        for d, grp in res.holdings.group_by("date"):
            i = pos[d[0]]
            w[i] = 0.0
            w[i, [inds.index(x) for x in grp["industry"]]] = grp["weight"].to_numpy()
        weights.append(w)
        cols += [(c, ind) for ind in inds]
    size = pd.DataFrame(
        np.concatenate(weights, axis=1),
        index=price.index,
        columns=pd.MultiIndex.from_tuples(cols, names=["config", "industry"]),
    )
    close = pd.concat([price] * len(configs), axis=1)
    close.columns = size.columns

    def simulate():
        return vbt.Portfolio.from_orders(
            close,
            size,
            size_type="targetpercent",
            group_by="config",
            cash_sharing=True,
            call_seq="auto",
            init_cash=1.0,
            freq="1D",
        )

    simulate()  # warm-up: numba compilation
    t0 = time.perf_counter()
    pf = simulate()
    value = pf.value()
    t_theirs = time.perf_counter() - t0

    diff = 0.0
    for c, res in enumerate(ours):
        start = res.holdings["date"].min()
        v = value[c]
        v = v[v.index >= pd.Timestamp(start)]
        v = (v / v.iloc[0]).iloc[1:].to_numpy()
        mine = navs[:, c][np.isfinite(navs[:, c])]
        diff = max(
            diff,
            float(np.abs(mine - v).max()),
            float(np.abs(res.daily["port_nav"].to_numpy() - mine).max()),
        )
    return {
        "configs": len(configs),
        "sweep_seconds": t_ours,
        "vectorbt_seconds": t_theirs,
        "sweep_speedup_vs_vectorbt": t_theirs / t_ours,
        "max_abs_diff_nav": diff,
    }


BASELINE_CHILD = """
import json, resource, sys, time
from rotation_dl.config import compose_run
from rotation_dl.stages.evaluate import baseline
cfg = compose_run(json.loads(sys.argv[1]))
t0 = time.perf_counter()
res = baseline(cfg)
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def bench_baseline(stocks: int, days: int) -> dict:
    """Peak RSS of the DI baseline stage (multi_horizon, monthly top 6 through the engine) on a
    synthetic daily market of `stocks` x `days`, in its own process after a separate ingest."""
    import subprocess
    import sys
    import tempfile

    sys.path.insert(0, str(REPO / "scripts"))
    from bench_ingest import make_daily_market

    raw = REPO / "outputs" / "bench" / "ingest_work" / f"daily_{stocks}x{days}"
    make_daily_market(raw, stocks, days)
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            "data=parquet",
            f"data.bars={raw / 'daily.parquet'}",
            f"data.classification={raw / 'classification.csv'}",
            "data.mapping.columns={symbol: code, ts: date}",
            f"paths.output_dir={tmp}",
        ]
        subprocess.run(  # the store, in its own process (its memory is not the baseline's)
            [sys.executable, "-m", "rotation_dl.cli", "ingest", *overrides],
            check=True, capture_output=True, cwd=REPO,
        )  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-c", BASELINE_CHILD, json.dumps(overrides)],
            check=True, capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "baseline_peak_rss_mb": res["peak_rss_mb"],
        "baseline_seconds": res["seconds"],
        "baseline_shape": {"stocks": stocks, "days": days},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--industries", type=int, default=31)
    ap.add_argument("--days", type=int, default=2500)
    ap.add_argument("--factors", type=int, default=6)
    ap.add_argument("--out", default=str(REPO / "outputs" / "bench" / "eval.json"))
    ap.add_argument("--baseline-stocks", type=int, default=5000)
    ap.add_argument("--baseline-days", type=int, default=1800)
    ap.add_argument("--only-baseline", action="store_true")
    args = ap.parse_args()
    base = bench_baseline(args.baseline_stocks, args.baseline_days)
    print(json.dumps(base, indent=2), flush=True)
    if args.only_baseline:
        out = Path(args.out)
        merged = json.loads(out.read_text()) if out.exists() else {}
        merged.update(base)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(merged, indent=2))
        return
    days, inds, long, growth = make_inputs(args.industries, args.days, args.factors)
    names = [f"f{j}" for j in range(args.factors)]
    ic = bench_ic(long, names)
    print(json.dumps(ic, indent=2), flush=True)
    sweep = bench_sweep(days, inds, long, growth)
    summary = {
        **{k: v for k, v in ic.items()},
        **sweep,
        **base,
        "shape": {"industries": args.industries, "days": args.days, "factors": args.factors},
        "tolerance": 1e-9,
        "agree": ic["max_abs_diff_ic"] < 1e-9 and sweep["max_abs_diff_nav"] < 1e-9,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
