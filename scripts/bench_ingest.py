"""Benchmark: ingest + industry aggregation vs a pandas groupby and a bare parquet scan.

Writes outputs/bench/ingest.json. `ratio_to_scan` is the best of `--rounds` (3) alternating
runs of ours end to end over the best of as many bare scans, all samples kept beside it
(`ingest_ratio_to_scan`: the store write alone, same rounds; `cpu_seconds` and
`ratio_to_scan_floor_all_cores_busy`: the CPU time the runs use, and the ratio it would give
with every core busy throughout). Each
measurement runs in its own subprocess so peak RSS (ru_maxrss of that child) belongs to that
measurement alone. Run: `make bench` or `python scripts/bench_ingest.py --stocks 1000 --days
60`. Daily keys (`daily_rows_per_s`, `reingest_seconds`): a synthetic daily market of 5,000
stocks x 1,800 days, first ingest and a re-ingest of the unchanged file (`--only-daily`
measures just those).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]


def _cpu_seconds() -> float:
    """User + system CPU time of this process so far, all threads."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _child(mode: str, raw: Path, work: Path) -> dict:
    """Run one measurement in this process (called in a subprocess)."""
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    if mode in ("rotation_dl", "ingest"):
        from rotation_dl.data.ingest import ingest_bars
        from rotation_dl.industry.build import build_industry_bars
        from rotation_dl.session import A_SHARE

        store = work / "store"
        shutil.rmtree(store, ignore_errors=True)
        report = ingest_bars(raw / "bars", store, session=A_SHARE)
        rows, out_rows = report.rows_read, 0
        if mode == "rotation_dl":
            res = build_industry_bars(
                store, raw / "classification.csv", work / "industry.parquet", session=A_SHARE
            )
            out_rows = res.frame.height
    elif mode == "industry":
        from rotation_dl.industry.build import build_industry_bars
        from rotation_dl.session import A_SHARE

        res = build_industry_bars(
            work / "store", raw / "classification.csv", work / "industry.parquet", session=A_SHARE
        )
        rows, out_rows = 0, res.frame.height
    elif mode == "daily":  # daily bars: first ingest, then a re-ingest of the unchanged file
        from rotation_dl.data.ingest import ingest_bars
        from rotation_dl.data.readers import ColumnMapping
        from rotation_dl.session import A_SHARE

        store = work / "daily_store"
        shutil.rmtree(store, ignore_errors=True)
        mapping = ColumnMapping(columns={"symbol": "code", "ts": "date"})
        kw = {"session": A_SHARE, "timezone": "Asia/Shanghai", "calendar": "XSHG"}
        report = ingest_bars(raw / "daily.parquet", store, mapping, **kw)
        rows, out_rows = report.rows_read, report.rows_added
        first = time.perf_counter() - t0
        t1 = time.perf_counter()
        again = ingest_bars(raw / "daily.parquet", store, mapping, **kw)
        reingest = time.perf_counter() - t1
        assert again.rows_added == 0
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {
            "mode": mode,
            "seconds": first,
            "cpu_seconds": _cpu_seconds() - cpu0,  # both ingests
            "reingest_seconds": reingest,
            "rows": rows,
            "out_rows": out_rows,
            "peak_rss_mb": rss_mb,
        }
    elif mode == "scan":
        df = pl.scan_parquet(sorted((raw / "bars").glob("*.parquet"))).collect()
        rows, out_rows = df.height, 0
    elif mode == "pandas":
        import pandas as pd  # noqa: TID251 - the peer being measured

        files = sorted((raw / "bars").glob("*.parquet"))
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        cls = pd.read_csv(raw / "classification.csv", dtype={"symbol": str})
        df = df[df["close"] > 0].merge(cls[["symbol", "industry"]], on="symbol")
        df = df.sort_values(["symbol", "ts"])
        df["prev_close"] = df.groupby("symbol")["close"].shift(1).fillna(df["open"])
        df["ret"] = df["close"] / df["prev_close"] - 1
        df = df[df["volume"] > 0]
        df["up"] = df["ret"] > 0
        df["w_ret"] = df["ret"] * df["amount"]
        g = df.groupby(["industry", "ts"])
        out = g.agg(
            ret_ew=("ret", "mean"),
            w_ret=("w_ret", "sum"),
            amount=("amount", "sum"),
            volume=("volume", "sum"),
            n_active=("ret", "size"),
            up_share=("up", "mean"),
        )
        out["ret_aw"] = out["w_ret"] / out["amount"]
        out.to_parquet(work / "industry_pandas.parquet")
        rows, out_rows = len(df), len(out)
    else:
        raise ValueError(mode)
    wall = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": mode,
        "seconds": wall,
        "cpu_seconds": _cpu_seconds() - cpu0,
        "rows": rows,
        "out_rows": out_rows,
        "peak_rss_mb": rss_mb,
    }


def _measure(mode: str, raw: Path, work: Path, code: Path | None = None) -> dict:
    """One measurement in a fresh process; `code`: run another checkout's rotation_dl (a git
    worktree of --compare-ref) instead of this one."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = f"{code}{os.pathsep}{env.get('PYTHONPATH', '')}"
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--raw", str(raw), "--work", str(work)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def worktree(ref: str) -> Path:
    """A detached git worktree of `ref` (the code to compare against), made once."""
    path = REPO / "outputs" / "bench" / f"ref_{ref.replace('/', '_')}"
    if not path.exists():
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), ref],
            check=True,
            capture_output=True,
        )
    return path


def _make_market(raw: Path, stocks: int, days: int, bar_minutes: int) -> None:
    from rotation_dl.synthetic.market import SampleConfig, write_sample_market

    if (raw / "bars").exists() and len(list((raw / "bars").glob("*.parquet"))) == days:
        return
    shutil.rmtree(raw, ignore_errors=True)
    cfg = SampleConfig(
        n_industries=31, n_stocks=stocks, n_days=days, bar_minutes=bar_minutes, seed=1
    )
    write_sample_market(raw, cfg)


def make_daily_market(raw: Path, stocks: int, days: int) -> Path:
    """A synthetic daily market on the XSHG calendar (random walks; main-board and SZ codes):
    `daily.parquet` with code, date, OHLC, volume (shares), amount."""
    import numpy as np

    from rotation_dl.data.calendar import trading_days

    path = raw / "daily.parquet"
    if path.exists() and pl.scan_parquet(path).select(pl.len()).collect().item() == stocks * days:
        return path
    raw.mkdir(parents=True, exist_ok=True)
    cal = trading_days(__import__("datetime").date(2018, 1, 2), days, "XSHG")
    rng = np.random.default_rng(0)
    px = 10 * np.exp(np.cumsum(rng.normal(0, 0.01, (days, stocks)), axis=0))
    codes = [f"{600000 + i:06d}" if i < stocks // 2 else f"{i:06d}" for i in range(stocks)]
    vol = rng.integers(100_000, 10_000_000, (days, stocks)).astype(float)
    pl.DataFrame(
        {
            "code": np.tile(np.asarray(codes), days),
            "date": np.repeat(np.asarray(cal, dtype="datetime64[D]"), stocks),
            "open": px.ravel(),
            "high": (px * 1.01).ravel(),
            "low": (px * 0.99).ravel(),
            "close": px.ravel(),
            "volume": vol.ravel(),
            "amount": (vol * px).ravel(),
        }
    ).with_columns(pl.col("date").cast(pl.Date)).write_parquet(path)
    pl.DataFrame(
        {"symbol": codes, "industry": [f"IND{k % 31:02d}" for k in range(stocks)]}
    ).write_csv(raw / "classification.csv")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stocks", type=int, default=1000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--bar-minutes", type=int, default=1)
    ap.add_argument("--skip-pandas", action="store_true")
    ap.add_argument(
        "--rounds", type=int, default=3, help="alternating scan/ours rounds for ratio_to_scan"
    )
    ap.add_argument("--daily-stocks", type=int, default=5000)
    ap.add_argument("--daily-days", type=int, default=1800)
    ap.add_argument("--only-daily", action="store_true")
    ap.add_argument(
        "--compare-ref",
        help="git ref whose ingest is measured beside this one, alternating, twice each",
    )
    ap.add_argument("--out", default=str(REPO / "outputs" / "bench" / "ingest.json"))
    ap.add_argument("--child")
    ap.add_argument("--raw")
    ap.add_argument("--work")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, Path(args.raw), Path(args.work))))
        return
    base = REPO / "outputs" / "bench" / "ingest_work"
    results: dict[str, dict] = {}
    daily_raw = base / f"daily_{args.daily_stocks}x{args.daily_days}"
    make_daily_market(daily_raw, args.daily_stocks, args.daily_days)
    (base / "work_daily").mkdir(parents=True, exist_ok=True)
    results["daily"] = _measure("daily", daily_raw, base / "work_daily")
    print(f"daily    {results['daily']}", file=sys.stderr)
    daily = results["daily"]
    daily_keys = {
        "daily_rows": daily["rows"],
        "daily_rows_per_s": daily["rows"] / daily["seconds"],
        "daily_seconds": daily["seconds"],
        "daily_peak_rss_mb": daily["peak_rss_mb"],
        "reingest_seconds": daily["reingest_seconds"],
        "reingest_share_of_first": daily["reingest_seconds"] / daily["seconds"],
    }
    if args.only_daily:
        out = Path(args.out)
        merged = json.loads(out.read_text()) if out.exists() else {}
        merged.update(daily_keys)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(merged, indent=2))
        print(json.dumps(daily_keys, indent=2))
        return
    samples: dict[str, list[float]] = {"scan": [], "ingest": [], "rotation_dl": []}
    for label, days in (("base", args.days), ("2x_days", 2 * args.days)):
        raw = base / f"raw_{args.stocks}x{days}x{args.bar_minutes}"
        _make_market(raw, args.stocks, days, args.bar_minutes)
        work = base / f"work_{label}"
        work.mkdir(parents=True, exist_ok=True)
        # the headline pair: scan and ours alternating, the best of `rounds` each (one slow
        # scan on a shared machine would otherwise flatter the ratio, one slow run spoil it)
        rounds = args.rounds if label == "base" else 1
        headline = ("scan", "ingest", "rotation_dl") if label == "base" else ("rotation_dl",)
        for _ in range(rounds):
            for mode in headline:
                run = _measure(mode, raw, work)
                key = f"{label}/{mode}"
                if label == "base":
                    samples[mode].append(run["seconds"])
                if key not in results or run["seconds"] < results[key]["seconds"]:
                    results[key] = run
                print(f"{label:8s} {mode:12s} {run}", file=sys.stderr)
        modes = ["industry"]
        if label == "base":
            modes += [] if args.skip_pandas else ["pandas"]
        for mode in modes:
            results[f"{label}/{mode}"] = _measure(mode, raw, work)
            print(f"{label:8s} {mode:12s} {results[f'{label}/{mode}']}", file=sys.stderr)
    compare = {}
    if args.compare_ref:  # the store write, this code vs the ref's, same raw files, alternating
        raw = base / f"raw_{args.stocks}x{args.days}x{args.bar_minutes}"
        ref_code = worktree(args.compare_ref)
        now, then, full_now, full_then, scans = [], [], [], [], []
        for _ in range(2):
            now.append(_measure("ingest", raw, base / "work_cmp")["seconds"])
            then.append(_measure("ingest", raw, base / "work_cmp_ref", ref_code)["seconds"])
            full_now.append(_measure("rotation_dl", raw, base / "work_cmp")["seconds"])
            full_then.append(
                _measure("rotation_dl", raw, base / "work_cmp_ref", ref_code)["seconds"]
            )
            scans.append(_measure("scan", raw, base / "work_cmp")["seconds"])
        compare = {
            "compare_ref": args.compare_ref,
            "ingest_seconds": now,
            "ingest_seconds_ref": then,
            "ingest_ratio_to_ref": min(now) / min(then),
            # ingest + industry bars, both codes, alternating, with a scan in each round
            "rotation_dl_seconds": full_now,
            "rotation_dl_seconds_ref": full_then,
            "scan_seconds": scans,
            "ratio_to_scan_pairs": [a / b for a, b in zip(full_now, scans, strict=True)],
            "ratio_to_scan_ref_pairs": [a / b for a, b in zip(full_then, scans, strict=True)],
        }
        print(f"compare  {compare}", file=sys.stderr)
    ours, scan = results["base/rotation_dl"], results["base/scan"]
    cpus = os.cpu_count() or 1
    summary = {
        "rows": ours["rows"],
        "stocks": args.stocks,
        "days": args.days,
        "bar_minutes": args.bar_minutes,
        "rows_per_s": ours["rows"] / ours["seconds"],
        "seconds": ours["seconds"],
        # pandas does the aggregation only (no validation, no store); ours end to end
        "speedup_vs_pandas": (
            results["base/pandas"]["seconds"] / ours["seconds"]
            if "base/pandas" in results
            else None
        ),
        # like for like: our aggregation stage (store -> industry bars) vs pandas (files -> same)
        "aggregation_speedup_vs_pandas": (
            results["base/pandas"]["seconds"] / results["base/industry"]["seconds"]
            if "base/pandas" in results
            else None
        ),
        "aggregation_seconds": results["base/industry"]["seconds"],
        "aggregation_peak_rss_mb": results["base/industry"]["peak_rss_mb"],
        "ratio_to_scan": ours["seconds"] / scan["seconds"],  # best of `rounds` each
        "ratio_rounds": args.rounds,
        "scan_samples": samples["scan"],
        "rotation_dl_samples": samples["rotation_dl"],
        # the store write alone (no industry bars), same rounds
        "ingest_ratio_to_scan": results["base/ingest"]["seconds"] / scan["seconds"],
        "ingest_samples": samples["ingest"],
        # CPU time (user + system, every thread) of the same best runs, and the ratio that
        # work would give if it kept every core busy all the time: no schedule beats it
        "cpu_seconds": ours["cpu_seconds"],
        "ingest_cpu_seconds": results["base/ingest"]["cpu_seconds"],
        "scan_cpu_seconds": scan["cpu_seconds"],
        "ratio_to_scan_floor_all_cores_busy": ours["cpu_seconds"] / cpus / scan["seconds"],
        "peak_rss_mb": ours["peak_rss_mb"],
        "peak_rss_mb_2x_days": results["2x_days/rotation_dl"]["peak_rss_mb"],
        "pandas_peak_rss_mb": results.get("base/pandas", {}).get("peak_rss_mb"),
        "scan_peak_rss_mb": scan["peak_rss_mb"],
        **daily_keys,
        **compare,
        "machine": {
            "python": platform.python_version(),
            "cpus": cpus,
            "polars": pl.__version__,
        },
        "runs": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
