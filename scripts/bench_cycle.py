"""Benchmark: a week's production cycle does not grow with the history.

Two sample markets of 1-minute bars, N and 4N trading days (`--days`, default 80; 300 stocks
in 31 industries, 15-minute industry bars). Each is set up untimed (ingest, a first cycle that
trains, gates and promotes a model) with its last `--weeks` (4) weeks held back; then each
held-back week is put in place in turn and one cycle is timed, as the CLI runs it (config
composition included): ingest the week's files, append the week's industry bars, no retrain
(not due), score, publish, monitor, report. `week_seconds_*` is the median of those weeks (all
kept in `samples`); `ratio_4x` = week_seconds_4x / week_seconds_1x (target <= 1.3).
`full_rebuild_seconds_4x`: one build of all industry bars of the 4N store, what every
week cost before the cycle appended. Writes outputs/bench/cycle.json.

    python scripts/bench_cycle.py [--days 80] [--stocks 300] [--weeks 4]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rotation_dl.backtest.schedule import rebalance_dates  # noqa: E402
from rotation_dl.cli import main  # noqa: E402
from rotation_dl.config import compose_run  # noqa: E402


def overrides(out: Path, days: int, stocks: int) -> list[str]:
    return [
        f"paths.output_dir={out}",
        f"paths.checkpoints={out / 'ck'}",
        "data.sample.bar_minutes=1",
        f"data.sample.n_days={days}",
        f"data.sample.n_stocks={stocks}",
        "industry.bar_minutes=15",
        "features.window=5",
        "model.hidden=16",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "walkforward.min_train_days=20",
        "walkforward.val_days=5",
        "walkforward.retrain_every=10000",  # one fold: the timed weeks never retrain
        "walkforward.fold_cap=null",
        "cycle.gate.min_val_ic=-1",
        "logger=none",
        "log_level=WARNING",
    ]


def quiet(args: list[str]) -> int:
    """Run one CLI command with its stdout discarded (its exit status kept)."""
    with open(os.devnull, "w") as null:
        saved, sys.stdout = sys.stdout, null
        try:
            return main(args)
        finally:
            sys.stdout = saved


def measure(days: int, stocks: int, work: Path, weeks: int = 4) -> dict:
    out = work / f"d{days}"
    o = overrides(out, days, stocks)
    assert quiet(["sample", *o]) == 0
    bars = Path(compose_run(o).data.bars)
    files = sorted(bars.glob("*.parquet"))
    by_day = {f.stem: f for f in files}
    from datetime import date

    dates = [date(int(s[:4]), int(s[4:6]), int(s[6:])) for s in by_day]
    ends = rebalance_dates(dates, "weekly")
    held = [d for d in dates if d > ends[-weeks - 1]]  # the last `weeks` weeks
    aside = work / f"aside{days}"
    aside.mkdir()
    for d in held:
        shutil.move(by_day[d.strftime("%Y%m%d")], aside / f"{d:%Y%m%d}.parquet")
    t = time.perf_counter()
    assert quiet(["cycle", *o, f"cycle.asof={ends[-weeks - 1]}"]) in (0, 3)  # train, promote
    setup = time.perf_counter() - t
    samples = []
    for week_end in ends[-weeks:]:
        for d in [d for d in held if d <= week_end and (aside / f"{d:%Y%m%d}.parquet").exists()]:
            shutil.move(aside / f"{d:%Y%m%d}.parquet", bars / f"{d:%Y%m%d}.parquet")
        t = time.perf_counter()
        rc = quiet(["cycle", *o, f"cycle.asof={week_end}"])
        samples.append(time.perf_counter() - t)
        assert rc in (0, 3), rc
    result = {"days": days, "setup_seconds": setup, "week_samples": samples}
    from rotation_dl.stages.industry import build_for

    t = time.perf_counter()
    build_for(compose_run(o), None, bar_minutes=15)
    result["full_rebuild_seconds"] = time.perf_counter() - t
    return result


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=80)
    ap.add_argument("--stocks", type=int, default=300)
    ap.add_argument("--weeks", type=int, default=4)
    a = ap.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_cycle_") as tmp:
        one = measure(a.days, a.stocks, Path(tmp), a.weeks)
        four = measure(4 * a.days, a.stocks, Path(tmp), a.weeks)
    w1, w4 = statistics.median(one["week_samples"]), statistics.median(four["week_samples"])
    report = {
        "week_seconds_1x": w1,
        "week_seconds_4x": w4,
        "ratio_4x": w4 / w1,
        "full_rebuild_seconds_4x": four["full_rebuild_seconds"],
        "full_rebuild_seconds_1x": one["full_rebuild_seconds"],
        "week_seconds_min": {"1x": min(one["week_samples"]), "4x": min(four["week_samples"])},
        "samples": {"1x": one, "4x": four},
        "setup": f"sample market, 1-minute bars, {a.stocks} stocks, 31 industries, "
        f"N = {a.days} and 4N = {4 * a.days} trading days; 15-minute industry bars",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }
    path = REPO / "outputs" / "bench" / "cycle.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    run()
