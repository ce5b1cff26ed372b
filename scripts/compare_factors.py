"""Compare factor panels with a 20-day momentum score on the same dates (rank IC, ICIR, t).

    python scripts/compare_factors.py --industry-bars outputs/sw_15min/industry_bars.parquet \
        flat=outputs/sw_15min/factor_panel.parquet hier=outputs/sw_15min_hier/factor_panel.parquet

Labels: forward 5-day industry return minus the cross-industry mean (the GRU's target before
rank normalisation), from the industry bars' daily closes. Momentum: close_t / close_{t-20} - 1.
Writes JSON next to the first panel (factor_comparison.json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from rotation_dl.backtest.ic import ic_series, summarize_ic
from rotation_dl.features.bars import daily_closes
from rotation_dl.features.labels import forward_excess_rank


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--industry-bars", required=True)
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--momentum-days", type=int, default=20)
    ap.add_argument("panels", nargs="+", help="name=path/to/factor_panel.parquet")
    args = ap.parse_args()
    daily = daily_closes(pl.scan_parquet(args.industry_bars)).collect()
    labels = forward_excess_rank(
        daily.select("industry", "date", "close").lazy(), args.horizon
    ).collect()
    k = args.momentum_days
    mom = daily.sort("industry", "date").with_columns(
        (pl.col("close") / pl.col("close").shift(k).over("industry") - 1).alias("score")
    )

    def summaries(ic: pl.DataFrame) -> dict:
        every_h = ic.sort("date").gather_every(args.horizon)  # labels do not overlap
        return {
            "rank_ic": summarize_ic(ic["rank_ic"], args.horizon).to_dict(),
            "ic": summarize_ic(ic["ic"], args.horizon).to_dict(),
            "rank_ic_non_overlapping": summarize_ic(every_h["rank_ic"]).to_dict(),
        }

    rows = {}
    dates = None
    for item in args.panels:
        name, path = item.split("=", 1)
        panel = pl.read_parquet(path)
        dates = panel["date"].unique() if dates is None else dates
        ic = ic_series(panel, labels)
        rows[name] = {**summaries(ic), "dates": f"{panel['date'].min()}..{panel['date'].max()}"}
    mom_ic = ic_series(mom.filter(pl.col("date").is_in(dates.implode())), labels)
    rows[f"momentum_{k}d"] = summaries(mom_ic)
    out = Path(args.panels[0].split("=", 1)[1]).parent / "factor_comparison.json"
    out.write_text(json.dumps(rows, indent=2))
    print(
        f"{'factor':<16}{'dates':>7}{'rank IC':>10}{'ICIR':>8}{'t':>7}{'IC>0':>7}"
        f"{'t (every ' + str(args.horizon) + 'th date)':>24}"
    )
    for name, r in rows.items():
        s, no = r["rank_ic"], r["rank_ic_non_overlapping"]
        print(
            f"{name:<16}{s['n_dates']:>7}{s['mean']:>10.4f}{s['icir']:>8.3f}"
            f"{s['t_stat']:>7.2f}{s['positive_share']:>7.2f}{no['t_stat']:>24.2f}"
        )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
