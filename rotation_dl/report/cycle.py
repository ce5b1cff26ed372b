"""The weekly cycle's report: one offline HTML file (plotly bundled) with the week's scores and
holdings, its alerts, the monitor (live IC against the walk-forward OOS band, PSI per input
feature, data health) and the model registry."""

from __future__ import annotations

import html
from datetime import date
from pathlib import Path

import polars as pl

from rotation_dl.artifacts import atomic_write_bytes
from rotation_dl.report.weekly import CSS, _fig, _table

SCORE_COLS = ["rank", "industry", "score", "rank_change", "held", "action"]


def _live_ic_chart(monitor: pl.DataFrame, band: dict | None) -> str:
    import plotly.graph_objects as go

    m = monitor.filter(pl.col("rank_ic").is_not_null())
    fig = go.Figure()
    x = [str(d) for d in m["asof"]]
    fig.add_trace(go.Bar(x=x, y=m["rank_ic"].to_list(), name="weekly rank IC", opacity=0.45))
    if band is not None and m.height:
        w = int(band["weeks"])
        rolling = m["rank_ic"].rolling_mean(window_size=w, min_samples=w)
        fig.add_trace(go.Scatter(x=x, y=rolling.to_list(), name=f"live {w}-week mean"))
        for key, dash in (("p5", "dot"), ("p50", "dash"), ("p95", "dot")):
            fig.add_trace(
                go.Scatter(
                    x=[x[0], x[-1]],
                    y=[band[key]] * 2,
                    mode="lines",
                    name=f"OOS band {key}",
                    line={"dash": dash, "color": "grey"},
                )
            )
    title = "Live rank IC of published weeks" + (
        f" against the walk-forward's {band['weeks']}-week band" if band else ""
    )
    fig.update_layout(title=title, yaxis_title="rank IC")
    return _fig(fig, "live-ic")


def _psi_chart(psi: pl.DataFrame, alert: float) -> str:
    import plotly.graph_objects as go

    p = psi.sort("psi", descending=True)
    fig = go.Figure(go.Bar(x=p["feature"].to_list(), y=p["psi"].to_list(), name="PSI"))
    fig.add_hline(y=alert, line_dash="dot", annotation_text=f"alert {alert:g}")
    fig.update_layout(title="Input drift: PSI of each feature, this week vs training window")
    return _fig(fig, "psi")


def build_cycle_report(
    *,
    asof: date,
    scores: pl.DataFrame,
    holdings: list[str],
    monitor: pl.DataFrame,
    psi: pl.DataFrame,
    band: dict | None,
    registry: pl.DataFrame,
    alerts: list[str],
    psi_alert: float,
    path: Path,
) -> Path:
    """Write the report to `path` (atomically) and return it."""
    from plotly.offline import get_plotlyjs

    this = monitor.filter(pl.col("asof") == asof).to_dicts()
    row = this[0] if this else {}
    alert_html = (
        "<ul class='alerts'>" + "".join(f"<li>{html.escape(a)}</li>" for a in alerts) + "</ul>"
        if alerts
        else "<p>No alerts.</p>"
    )
    band_text = (
        f"Band: W-week means of the walk-forward OOS weekly rank IC (W = {band['weeks']}, "
        f"{band['windows']} windows): 5th {band['p5']:+.4f}, median {band['p50']:+.4f}, "
        f"95th {band['p95']:+.4f}."
        if band
        else "No walk-forward OOS band: run `rotation-dl train` for this run."
    )
    live_cols = [
        "asof",
        "model_version",
        "rank_ic",
        "topk_excess",
        "topk_excess_net",
        "live_mean_ic",
        "live_nw_t",
        "window_mean_ic",
        "alerts",
    ]
    health = {
        k: row.get(k)
        for k in ("missing_industries", "active_share", "store_last", "store_lag_days")
    }
    note = f" ({html.escape(row['live_note'])})" if row.get("live_note") else ""
    body = (
        f"<h1>Weekly cycle {asof}</h1><p>Holdings: <b>{html.escape(', '.join(holdings))}</b>; "
        f"live model v{row.get('model_version')}.</p><h2>Alerts</h2>{alert_html}"
        f"<h2>Scores</h2>{_table(scores.select(SCORE_COLS))}"
        f"<h2 id='monitor'>Monitor</h2><p>{html.escape(band_text)} Live: the latest revision "
        "of each published week whose label has matured; Newey-West t with the label's "
        f"overlap in weeks{note}."
        f"</p>{_live_ic_chart(monitor, band)}"
        f"{_table(monitor.select(live_cols).tail(16))}"
        f"{_psi_chart(psi, psi_alert) if psi.height else '<p>No PSI this week.</p>'}"
        f"<h3>Data health</h3>{_table(pl.DataFrame([health]))}"
        f"<h2>Model registry</h2>{_table(registry) if registry.height else '<p>empty</p>'}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Cycle {asof}</title>"
        f"<style>{CSS}</style><script>{get_plotlyjs()}</script></head><body>{body}</body></html>"
    )
    atomic_write_bytes(path, page.encode())
    return path
