"""Industry-level OOS rank IC of the constituent models beside the industry-level GRU and
20-day momentum, on the same dates, as a Markdown table (the README's research table).

    python scripts/compare_stock_models.py \
        --industry-bars outputs/sw_15min/industry_bars.parquet \
        --stock outputs/sw_15min_stock --stock-checkpoints checkpoints/sw_15min_stock \
        pooled=outputs/sw_15min_pooled flat=outputs/sw_15min_flat3

A `stock` run is re-aggregated from its per-seed stock scores (every fold's
`stock_scores.parquet`) with each `model.aggregate` rule (mean, zmean, amount_weighted, median:
the aggregation only shapes the industry score, the training is the same); other runs are read
from their factor panel and train_metrics.json. Per row: the ensemble (mean over seeds) rank IC
with naive, Newey-West and non-overlapping t, and the per-seed mean +- std. The stock model's
own stock-level rank IC closes the table. Writes stock_comparison.json in the stock run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl

from rotation_dl.backtest.ic import ic_series, summarize_ic
from rotation_dl.export.scoring import aggregate_stock_scores
from rotation_dl.features.bars import daily_closes
from rotation_dl.features.labels import forward_excess_rank
from rotation_dl.features.stock_panel import load_stock_panel

RULES = ("mean", "zmean", "amount_weighted", "median")


def aggregate(scores: pl.DataFrame, how: str, industries: list[str]) -> pl.DataFrame:
    """(date, symbol, industry, amount, score) of valid stocks -> (date, industry, score),
    date by date with the scorer's rule (`export.scoring.aggregate_stock_scores`)."""
    frames = []
    for (day,), f in scores.partition_by("date", as_dict=True).items():
        member = f["industry"].cast(pl.Enum(industries)).to_physical().to_numpy()
        ind, counts = aggregate_stock_scores(
            f["score"].to_numpy(), member, len(industries), how, f["amount"].to_numpy()
        )
        frames.append(
            pl.DataFrame({"industry": industries, "score": ind, "n": counts})
            .filter(pl.col("n") > 0)
            .select(pl.lit(day).alias("date"), "industry", "score")
        )
    return pl.concat(frames)


def stock_seed_scores(checkpoints: Path, panel_dir: Path) -> pl.DataFrame:
    """(seed, date, symbol, industry, amount, score) of every fold's test block."""
    sp = load_stock_panel(panel_dir)
    frames = [
        pl.read_parquet(f) for f in sorted(checkpoints.glob("fold_*/seed_*/stock_scores.parquet"))
    ]
    scores = pl.concat(frames).filter(pl.col("active") & pl.col("score").is_not_null())
    d_idx = {d: i for i, d in enumerate(sp.dates)}
    s_idx = {s: i for i, s in enumerate(sp.symbols)}
    di = scores["date"].replace_strict(d_idx, return_dtype=pl.Int64).to_numpy()
    si = scores["symbol"].replace_strict(s_idx, return_dtype=pl.Int64).to_numpy()
    member = np.asarray(sp.member)[di, si]
    return scores.with_columns(
        pl.Series("industry", np.asarray(sp.industries)[member]),
        pl.Series("amount", np.asarray(sp.amount)[di, si].astype(np.float64)),
    ).filter(pl.Series(member >= 0))


def summary(per_seed: dict[int, pl.DataFrame], labels: pl.DataFrame, dates, h: int) -> dict:
    """Ensemble (mean over seeds) and per-seed rank IC statistics on `dates`."""
    ens = (
        pl.concat([f.with_columns(pl.lit(k).alias("seed")) for k, f in per_seed.items()])
        .group_by("date", "industry")
        .agg(pl.col("score").mean())
        .filter(pl.col("date").is_in(dates))
    )
    ic = ic_series(ens, labels)
    seeds = [
        ic_series(f.filter(pl.col("date").is_in(dates)), labels)["rank_ic"].mean()
        for f in per_seed.values()
    ]
    return {
        "rank_ic": summarize_ic(ic["rank_ic"], h).to_dict(),
        "seeds": {
            "per_seed": seeds,
            "mean": float(np.mean(seeds)),
            "std": float(np.std(seeds, ddof=1)) if len(seeds) > 1 else float("nan"),
            "n_seeds": len(seeds),
        },
        "dates": f"{ic['date'].min()}..{ic['date'].max()}",
    }


def run_seeds(run: Path, checkpoints: Path | None = None) -> dict[int, pl.DataFrame]:
    """Per-seed industry scores of a run: from its fold folders' scores.parquet."""
    metrics = json.loads((run / "train_metrics.json").read_text())
    ck = checkpoints or Path("checkpoints") / metrics["run"]
    frames = [pl.read_parquet(f) for f in sorted(ck.glob("fold_*/seed_*/scores.parquet"))]
    out = {}
    for (seed,), f in pl.concat(frames).partition_by("seed", as_dict=True).items():
        out[int(seed)] = f.filter(pl.col("valid")).select("date", "industry", "score")
    return out


def fmt(x: float, spec: str = ".2f") -> str:
    return "n/a" if x != x else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--industry-bars", required=True)
    ap.add_argument("--stock", required=True, help="the stock run's output folder")
    ap.add_argument("--stock-checkpoints", required=True)
    ap.add_argument("--stock-panel", help="the stock panel folder (default: from the metrics)")
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--momentum-days", type=int, default=20)
    ap.add_argument("runs", nargs="*", help="name=run output folder (checkpoints/<run>)")
    args = ap.parse_args()
    h = args.horizon
    daily = daily_closes(pl.scan_parquet(args.industry_bars)).collect()
    labels = forward_excess_rank(daily.select("industry", "date", "close").lazy(), h).collect()
    stock_run = Path(args.stock)
    metrics = json.loads((stock_run / "train_metrics.json").read_text())
    panel_dir = args.stock_panel or metrics["stock_panel"]["path"]
    scores = stock_seed_scores(Path(args.stock_checkpoints), Path(panel_dir))
    industries = load_stock_panel(panel_dir).industries
    dates = pl.read_parquet(stock_run / "factor_panel.parquet")["date"].unique().implode()
    rows = {}
    for how in RULES:
        per_seed = {
            int(k): aggregate(f.drop("seed"), how, industries)
            for (k,), f in scores.partition_by("seed", as_dict=True).items()
        }
        rows[f"stock ({how})"] = summary(per_seed, labels, dates, h)
    for item in args.runs:
        name, path = item.split("=", 1)
        rows[name] = summary(run_seeds(Path(path)), labels, dates, h)
    k = args.momentum_days
    mom = daily.sort("industry", "date").select(
        "date",
        "industry",
        (pl.col("close") / pl.col("close").shift(k).over("industry") - 1).alias("score"),
    )
    rows[f"momentum {k}d"] = summary({0: mom}, labels, dates, h)
    out = stock_run / "stock_comparison.json"
    stock_ic = {
        "rank_ic": metrics["oos_stock_rank_ic"],
        "seeds": metrics["seed_oos_stock_rank_ic"],
    }
    out.write_text(json.dumps({**rows, "stock level": stock_ic}, indent=2))
    print(
        f"| model | dates | rank IC (ensemble) | per seed mean ± std | t naive | t Newey-West "
        f"(lag {h - 1}) | t non-overlapping |\n|---|---|---|---|---|---|---|"
    )
    for name, r in {**rows, "stock level (stock rank IC)": stock_ic}.items():
        s, sd = r["rank_ic"], r["seeds"]
        seed_text = (
            f"{sd['mean']:.4f} ± {fmt(sd['std'], '.4f')} ({sd['n_seeds']})"
            if sd.get("n_seeds", 0) > 1
            else "-"
        )
        print(
            f"| {name} | {s['n_dates']} | {s['mean']:.4f} | {seed_text} | {fmt(s['t_stat'])} "
            f"| {fmt(s['t_newey_west'])} | {fmt(s['t_non_overlapping'])} |"
        )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
