"""The research report of `compare`: one offline HTML file (plotly bundled) with the cumulative
IC per factor, the IC by year, the bootstrap distributions of the mean IC, NAV before and after
costs, and membership of the model confidence set."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import polars as pl

from rotation_dl.artifacts import atomic_write_bytes
from rotation_dl.report.weekly import CSS, _fig, _table


def _charts(wide: pl.DataFrame, daily: dict[str, pl.DataFrame], draws: dict) -> dict[str, str]:
    import plotly.graph_objects as go

    names = [c for c in wide.columns if c != "date"]
    cum = go.Figure()
    for n in names:
        cum.add_trace(go.Scatter(x=wide["date"].to_list(), y=wide[n].cum_sum().to_list(), name=n))
    cum.update_layout(title="Cumulative rank IC on the common dates", yaxis_title="sum of IC")
    years = wide.with_columns(pl.col("date").dt.year().alias("year"))
    by_year = go.Figure()
    for n in names:
        g = years.group_by("year").agg(pl.col(n).mean()).sort("year")
        by_year.add_trace(go.Bar(x=[str(y) for y in g["year"]], y=g[n].to_list(), name=n))
    by_year.update_layout(title="Mean rank IC by calendar year", barmode="group")
    boot = go.Figure()
    for n in names:
        boot.add_trace(go.Histogram(x=list(map(float, draws[n])), name=n, opacity=0.55))
    boot.update_layout(title="Stationary-bootstrap distribution of the mean rank IC",
                       barmode="overlay")  # fmt: skip
    nav = go.Figure()
    for n, d in daily.items():
        bench = np.cumprod(1 + d["bench"].to_numpy())
        excess_gross = np.cumprod(1 + d["gross"].to_numpy()) / bench
        excess_net = np.cumprod(1 + d["net"].to_numpy()) / bench
        x = d["date"].to_list()
        nav.add_trace(go.Scatter(x=x, y=excess_gross.tolist(), name=f"{n} before costs"))
        nav.add_trace(go.Scatter(x=x, y=excess_net.tolist(), name=f"{n} after costs",
                                 line={"dash": "dot"}))  # fmt: skip
    nav.update_layout(title="Excess NAV of the top-k portfolios, before and after costs")
    return {
        "cum": _fig(cum, "cum-ic"),
        "year": _fig(by_year, "ic-year"),
        "boot": _fig(boot, "boot"),
        "nav": _fig(nav, "nav"),
    }


def build_research_report(
    summary: dict, wide: pl.DataFrame, daily: dict[str, pl.DataFrame], draws: dict, path: Path
) -> Path:
    """Write the report to `path` (atomically) and return it."""
    from plotly.offline import get_plotlyjs

    charts = _charts(wide, daily, draws)
    rows = []
    for name, f in summary["factors"].items():
        rows.append(
            {
                "factor": name,
                "rank IC": f["rank_ic"],
                "95% CI": f"[{f['ci95'][0]:+.4f}, {f['ci95'][1]:+.4f}]",
                "ICIR": f["icir"],
                "t naive": f["t_naive"],
                "t Newey-West": f["t_nw"],
                "t non-overlapping (mean over offsets)": f["t_nonoverlap"],
                "IC > 0": f["positive_share"],
                "IR before costs": f["ir_before_costs"],
                "IR after costs": f["ir_after_costs"],
                "break-even (bps)": f["break_even_cost_bps"],
                "in MCS": "yes" if f["in_mcs"] else "no",
                "MCS p": f["mcs_pvalue"],
            }
        )
    spa = summary["spa"]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in summary["notes"])
    body = (
        f"<h1>Factor comparison</h1><p>{summary['dates']} common labelled dates "
        f"({summary['first_date']}..{summary['last_date']}); labels: "
        f"{html.escape(summary['label'])}; stationary bootstrap, mean block "
        f"{summary['block_length']} days, {summary['bootstrap_reps']} draws; costs: "
        f"{html.escape(summary['costs'])}; portfolio: {html.escape(summary['portfolio'])}.</p>"
        f"<h2>Every candidate</h2>{_table(pl.DataFrame(rows), cls='wide')}"
        f"<h2>Choosing the best</h2><p id='spa'>Hansen's SPA test, H0: no candidate beats "
        f"<b>{html.escape(spa['benchmark'])}</b>. Best: <b>{html.escape(spa['best'])}</b>, "
        f"p = {spa['pvalue']:.3f} (lower {spa['pvalue_lower']:.3f}, upper "
        f"{spa['pvalue_upper']:.3f}).</p><p id='mcs'>Model confidence set at "
        f"{1 - summary['mcs_size']:.0%}: <b>{html.escape(', '.join(summary['mcs']))}</b>.</p>"
        + (f"<ul class='notes'>{notes}</ul>" if notes else "")
        + f"<h2>IC</h2>{charts['cum']}{charts['year']}"
        f"<h2>Bootstrap</h2>{charts['boot']}<h2>Portfolios</h2>{charts['nav']}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Factor comparison</title>"
        f"<style>{CSS}</style><script>{get_plotlyjs()}</script></head><body>{body}</body></html>"
    )
    atomic_write_bytes(path, page.encode())
    return path
