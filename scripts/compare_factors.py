"""Compare factor panels with a 20-day momentum score on the same dates (rank IC, ICIR, naive,
Newey-West and non-overlapping t), as a Markdown table.

    python scripts/compare_factors.py --industry-bars outputs/sw_15min/industry_bars.parquet \
        flat=outputs/sw_15min/factor_panel.parquet hier=outputs/sw_15min_hier/factor_panel.parquet

    # a GRU run with several seeds (per-seed mean +- std from its train_metrics.json) beside
    # the diffusion-index variants (DI panels: the `di` column is the score)
    O=outputs/ashare_daily_gru
    python scripts/compare_factors.py --industry-bars $O/industry_bars.parquet \
        --metrics gru=$O/train_metrics.json \
        gru=$O/factor_panel.parquet \
        di_lag=$O/baseline/di_lag.parquet di_ema=$O/baseline/di_ema.parquet ...

Labels: forward h-day industry return minus the cross-industry mean (the GRU's target before
rank normalisation), from the industry bars' daily closes. Every panel is scored on the dates of
the first one. Momentum: close_t / close_{t-20} - 1. Writes factor_comparison.json next to the
first panel and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from rotation_dl.backtest.ic import ic_series, summarize_ic
from rotation_dl.features.bars import daily_closes
from rotation_dl.features.labels import forward_excess_rank


def read_panel(path: str) -> pl.DataFrame:
    """(date, industry, score) from a GRU factor panel (`score`) or a DI panel (`di`)."""
    panel = pl.read_parquet(path)
    col = "score" if "score" in panel.columns else "di"
    return panel.select("date", "industry", pl.col(col).alias("score"))


def fmt(x: float, spec: str = ".2f") -> str:
    return "n/a" if x != x else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--industry-bars", required=True)
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--momentum-days", type=int, default=20)
    ap.add_argument(
        "--metrics", action="append", default=[], help="name=train_metrics.json (seed stats)"
    )
    ap.add_argument("panels", nargs="+", help="name=path/to/factor_or_di_panel.parquet")
    args = ap.parse_args()
    h = args.horizon
    daily = daily_closes(pl.scan_parquet(args.industry_bars)).collect()
    labels = forward_excess_rank(daily.select("industry", "date", "close").lazy(), h).collect()
    k = args.momentum_days
    mom = daily.sort("industry", "date").with_columns(
        (pl.col("close") / pl.col("close").shift(k).over("industry") - 1).alias("score")
    )
    seeds = {}
    for item in args.metrics:
        name, path = item.split("=", 1)
        seeds[name] = json.loads(Path(path).read_text()).get("seed_oos_rank_ic")

    panels = [(n, read_panel(p)) for n, p in (i.split("=", 1) for i in args.panels)]
    dates = panels[0][1]["date"].unique().implode()
    panels.append((f"momentum_{k}d", mom.select("date", "industry", "score")))
    rows = {}
    for name, panel in panels:
        ic = ic_series(panel.filter(pl.col("date").is_in(dates)), labels)
        rows[name] = {
            "rank_ic": summarize_ic(ic["rank_ic"], h).to_dict(),
            "ic": summarize_ic(ic["ic"], h).to_dict(),
            "dates": f"{ic['date'].min()}..{ic['date'].max()}",
            "seeds": seeds.get(name),
        }
    out = Path(args.panels[0].split("=", 1)[1]).parent / "factor_comparison.json"
    out.write_text(json.dumps(rows, indent=2))
    print(
        f"| factor | dates | rank IC | per-seed mean ± std | ICIR | t naive | t Newey-West "
        f"(lag {h - 1}) | t non-overlapping | IC > 0 |\n|---|---|---|---|---|---|---|---|---|"
    )
    for name, r in rows.items():
        s, sd = r["rank_ic"], r["seeds"]
        seed_text = (
            f"{sd['mean']:.4f} ± {fmt(sd['std'], '.4f')} ({sd['n_seeds']})"
            if sd and sd.get("n_seeds", 0) > 1
            else "-"
        )
        print(
            f"| {name} | {s['n_dates']} | {s['mean']:.4f} | {seed_text} | {fmt(s['icir'], '.3f')} "
            f"| {fmt(s['t_stat'])} | {fmt(s['t_newey_west'])} | {fmt(s['t_non_overlapping'])} "
            f"| {fmt(s['positive_share'])} |"
        )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
