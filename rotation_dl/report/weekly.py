"""Weekly rotation report: GRU scores and holdings, the diffusion index, performance, IC, the
micro-cap timing model and the factor IC monitor, in one offline HTML file (plotly bundled).

Every number shown comes from the metrics engine (`rotation_dl.backtest.metrics`) or from the
stage outputs passed in; the templates only format. `build_weekly_report` writes the HTML page
and a Markdown summary to the paths it is given.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from rotation_dl.artifacts import atomic_write_bytes
from rotation_dl.backtest.ic import ic_series
from rotation_dl.backtest.metrics import calendar_year_table, to_date_excess


@dataclass
class ModelResult:
    """One model's outputs: its factor panel, backtest daily frame and holdings."""

    name: str
    factors: pl.DataFrame  # date, industry, score
    daily: pl.DataFrame  # backtest daily frame (port_ret, bench_ret, ...)
    holdings: pl.DataFrame  # date, industry, weight


@dataclass
class ReportInputs:
    asof: date
    models: list[ModelResult]
    forward: pl.DataFrame  # date, industry, fwd_ret, fwd_excess (for IC)
    score_table: pl.DataFrame | None = None  # this week's GRU scores (score command)
    di_rankings: pl.DataFrame | None = None  # date, industry, di, rank, di_change, rank_change
    timing: dict | None = None  # series, grid, stats (run_timing)
    factor_ic: pl.DataFrame | None = None  # factor IC summary
    notes: list[str] = field(default_factory=list)
    horizon: int = 5  # days of the forward return the IC is measured against
    forward_label: str = ""  # what `forward` is, in words (stages.inputs.ic_label)


def common_ic_dates(inputs: ReportInputs) -> dict[str, pl.DataFrame]:
    """Each model's rank IC series up to the report date, on the dates every model has (a
    comparison on each model's own dates would compare different markets)."""
    series = {
        m.name: ic_series(m.factors.filter(pl.col("date") <= inputs.asof), inputs.forward)
        for m in inputs.models
    }
    shared = None
    for ic in series.values():
        dates = set(ic["date"].to_list())
        shared = dates if shared is None else shared & dates
    keep = pl.Series(sorted(shared or []), dtype=pl.Date)
    return {name: ic.filter(pl.col("date").is_in(keep.implode())) for name, ic in series.items()}


def ic_table(inputs: ReportInputs) -> str:
    """Each model's mean rank IC up to the report date, on the dates all models share, with
    its naive, Newey-West (lag h - 1) and non-overlapping t-stats, or the too-few-dates
    warning; a caption says what the IC is measured against."""
    from rotation_dl.backtest.ic import summarize_ic

    rows = []
    common = common_ic_dates(inputs)
    for m in inputs.models:
        ic = common[m.name]
        s = summarize_ic(ic["rank_ic"], inputs.horizon)
        rows.append(
            {
                "model": m.name,
                "dates": s.n_dates,
                "mean rank IC": s.mean,
                "t (naive)": s.t_stat,
                f"t (Newey-West, lag {s.newey_west_lag})": s.t_newey_west,
                "t (non-overlapping)": s.t_non_overlapping,
                "note": s.warning or "",
            }
        )
    n = len(next(iter(common.values()))) if common else 0
    against = html.escape(inputs.forward_label or "forward excess return")
    caption = (
        f"<p class='ic-caption'>Rank IC vs the {against}, on the {n} dates every model has.</p>"
    )
    return caption + _table(pl.DataFrame(rows), cls="ic-table")


def performance_numbers(inputs: ReportInputs) -> dict:
    """The engine's week / MTD / YTD figures and calendar-year tables for every model."""
    out = {}
    for m in inputs.models:
        out[m.name] = {
            "to_date": to_date_excess(m.daily, inputs.asof),
            "years": calendar_year_table(m.daily.filter(pl.col("date") <= inputs.asof)).to_dicts(),
        }
    return out


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or x != x else f"{x * 100:+.{digits}f}%"


def _table(df: pl.DataFrame, fmt: dict[str, str] | None = None, cls: str = "") -> str:
    fmt = fmt or {}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    rows = []
    for r in df.to_dicts():
        cells = []
        for c in df.columns:
            v = r[c]
            if v is None:
                s = "–"
            elif c in fmt and fmt[c] == "pct":
                s = _pct(v)
            elif isinstance(v, float):
                s = f"{v:.4f}"
            elif isinstance(v, list):
                s = ", ".join(map(str, v))
            else:
                s = str(v)
            cells.append(f"<td>{html.escape(s)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    body = "".join(rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _fig(fig, div_id: str) -> str:
    fig.update_layout(
        margin={"l": 50, "r": 20, "t": 40, "b": 40}, height=360, template="plotly_white"
    )
    return fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False}
    )


def _charts(inputs: ReportInputs) -> dict[str, str]:
    import plotly.graph_objects as go

    charts: dict[str, str] = {}
    gru = inputs.models[0]
    if inputs.score_table is not None:
        t = inputs.score_table.sort("score", nulls_last=True)
        charts["scores"] = _fig(
            go.Figure(
                go.Bar(
                    x=t["score"].to_list(),
                    y=t["industry"].to_list(),
                    orientation="h",
                    marker_color=["#d62728" if h else "#1f77b4" for h in t["held"].to_list()],
                )
            ).update_layout(
                title=f"{gru.name} industry scores, {inputs.asof} (red: held)", height=620
            ),
            "chart-scores",
        )
    if inputs.di_rankings is not None:
        week = inputs.di_rankings.filter(pl.col("date") == inputs.di_rankings["date"].max())
        week = week.sort("di")
        charts["di"] = _fig(
            go.Figure(
                go.Bar(x=week["di"].to_list(), y=week["industry"].to_list(), orientation="h")
            ).update_layout(title=f"Diffusion index, {week['date'][0]}", height=620),
            "chart-di",
        )
    nav = go.Figure()
    exc = go.Figure()
    longest = max(inputs.models, key=lambda m: m.daily.height).daily
    longest = longest.filter(pl.col("date") <= inputs.asof)
    nav.add_trace(
        go.Scatter(
            x=longest["date"].to_list(),
            y=longest["bench_nav"].to_list(),
            name="equal-weight benchmark",
            line={"dash": "dot"},
        )
    )
    for m in inputs.models:
        d = m.daily.filter(pl.col("date") <= inputs.asof)
        nav.add_trace(go.Scatter(x=d["date"].to_list(), y=d["port_nav"].to_list(), name=m.name))
        exc.add_trace(go.Scatter(x=d["date"].to_list(), y=d["excess_nav"].to_list(), name=m.name))
    charts["nav"] = _fig(nav.update_layout(title="NAV vs equal-weight benchmark"), "chart-nav")
    charts["excess"] = _fig(
        exc.update_layout(title="Excess NAV (portfolio / benchmark)"), "chart-excess"
    )
    icf = go.Figure()
    for m in inputs.models:
        ic = ic_series(m.factors.filter(pl.col("date") <= inputs.asof), inputs.forward)
        ic = ic.with_columns(pl.col("rank_ic").rolling_mean(20, min_samples=5).alias("roll"))
        icf.add_trace(
            go.Scatter(
                x=ic["date"].to_list(),
                y=ic["rank_ic"].to_list(),
                name=f"{m.name} rank IC",
                opacity=0.35,
                mode="lines",
            )
        )
        icf.add_trace(
            go.Scatter(
                x=ic["date"].to_list(), y=ic["roll"].to_list(), name=f"{m.name} 20-day mean"
            )
        )
    charts["ic"] = _fig(
        icf.update_layout(title="Rank IC vs 5-day forward excess return"), "chart-ic"
    )
    if inputs.timing is not None:
        s = inputs.timing["series"]
        tf = go.Figure(go.Scatter(x=s["date"].to_list(), y=s["di"].to_list(), name="DI"))
        for col in [c for c in s.columns if c.startswith("state_")]:
            tf.add_trace(
                go.Scatter(
                    x=s["date"].to_list(),
                    y=s[col].to_list(),
                    name=col[6:],
                    line={"shape": "hv"},
                    yaxis="y2",
                    opacity=0.6,
                )
            )
        tf.update_layout(
            title="Micro-cap DI and signal states",
            yaxis2={"overlaying": "y", "side": "right", "range": [-0.1, 1.1]},
        )
        charts["timing"] = _fig(tf, "chart-timing")
        g = inputs.timing["grid"]
        xs = [c for c in g.columns if c.startswith("x")]
        heat = go.Figure(
            go.Heatmap(
                z=g.select(xs).to_numpy().tolist(),
                x=[c[1:] for c in xs],
                y=[f"T={t} (N={n})" for t, n in zip(g["T"], g["days_ahead"], strict=True)],
                colorscale="RdBu_r",
                zmin=0,
                zmax=1,
            )
        )
        charts["grid"] = _fig(
            heat.update_layout(title="Critical-point grid G(x, T)"), "chart-grid"
        )
    return charts


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1180px;color:#222} h1{margin-bottom:4px}
h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0;font-size:13px} td,th{border:1px solid #ddd;
padding:3px 8px;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px} .note{color:#666;font-size:12px}
.kpi{display:inline-block;margin-right:28px} .kpi b{font-size:20px;display:block}
"""


def build_weekly_report(inputs: ReportInputs, html_path: Path, md_path: Path) -> Path:
    """Write the HTML page (self-contained, works offline) and the Markdown summary; returns
    the HTML path."""
    from plotly.offline import get_plotlyjs

    perf = performance_numbers(inputs)
    charts = _charts(inputs)
    gru = inputs.models[0]
    parts = [
        f"<h1>Industry rotation weekly report</h1><p class='note'>Week ending "
        f"{inputs.asof}. Excess is reported <b>compounded</b> (portfolio NAV / benchmark NAV "
        f"− 1) and <b>summed</b> (sum of daily excess returns); the benchmark is the "
        f"equal-weight average of all industries, rebalanced daily.</p>"
    ]
    kpis = []
    for name, p in perf.items():
        td = p["to_date"]
        kpis.append(
            f"<div class='kpi' data-model='{html.escape(name)}'>{html.escape(name)} YTD excess"
            f"<b class='ytd-excess' data-value='{td['ytd']['excess_compounded']:.10f}'>"
            f"{_pct(td['ytd']['excess_compounded'])}</b></div>"
        )
    parts.append("<div>" + "".join(kpis) + "</div>")
    parts.append(f"<h2>{html.escape(gru.name)}: scores and holdings</h2>")
    if "scores" in charts:
        parts.append(charts["scores"])
    if inputs.score_table is not None:
        t = inputs.score_table.select(
            "rank", "industry", "score", "prev_rank", "rank_change", "held", "action"
        )
        moves = t.filter(pl.col("action").is_in(["buy", "sell"]))
        parts.append(
            "<h3>Holdings in / out</h3>"
            + (_table(moves) if moves.height else "<p>No change in holdings this week.</p>")
        )
        parts.append("<h3>Ranks and week-over-week changes</h3>" + _table(t))
        if absent := _absent(inputs.score_table):
            parts.append(
                f"<p class='warning'>No data this week (unscored, never held): "
                f"{html.escape(', '.join(absent))}</p>"
            )
    if inputs.di_rankings is not None:
        week = inputs.di_rankings.filter(pl.col("date") == inputs.di_rankings["date"].max())
        parts.append("<h2>Diffusion index</h2>" + charts.get("di", ""))
        parts.append(
            "<h3>Ranking and week-over-week DI change</h3>"
            + _table(week.select("rank", "industry", "di", "di_change", "rank_change"))
        )
        if len(inputs.models) > 1:
            h = inputs.models[1].holdings
            month = h.filter(
                pl.col("date") == h.filter(pl.col("date") <= inputs.asof)["date"].max()
            )
            parts.append(
                f"<h3>This month's DI allocation (from {month['date'][0]})</h3>"
                + _table(month.select("industry", "weight"))
            )
    rows = []
    for name, p in perf.items():
        td = p["to_date"]
        rows.append(
            {
                "model": name,
                "week": td["week"]["excess_compounded"],
                "month_to_date": td["mtd"]["excess_compounded"],
                "year_to_date": td["ytd"]["excess_compounded"],
                "ytd_summed": td["ytd"]["excess_summed"],
            }
        )
    pct = {c: "pct" for c in ("week", "month_to_date", "year_to_date", "ytd_summed")}
    parts.append(
        "<h2>Performance</h2><p class='note'>Excess compounded unless labelled summed."
        "</p>" + _table(pl.DataFrame(rows), pct, "perf")
    )
    for name, p in perf.items():
        years = pl.DataFrame(p["years"])
        if years.height:
            parts.append(
                f"<h3>{html.escape(name)}: calendar years</h3>"
                + _table(
                    years,
                    {
                        c: "pct"
                        for c in ("portfolio", "benchmark", "excess_compounded", "excess_summed")
                    },
                )
            )
    parts.append("<div class='grid2'>" + charts["nav"] + charts["excess"] + "</div>")
    parts.append("<h2>Rank IC</h2>" + charts["ic"] + ic_table(inputs))
    if inputs.timing is not None:
        st = inputs.timing["series"].tail(1).to_dicts()[0]
        parts.append(
            "<h2>Micro-cap timing</h2><p>DI "
            f"{st['di']:.3f} on {st['date']}; states: "
            + ", ".join(
                f"{k[6:]} = {'long' if v else 'flat'}"
                for k, v in st.items()
                if k.startswith("state_")
            )
            + "</p>"
        )
        parts.append("<div class='grid2'>" + charts["timing"] + charts["grid"] + "</div>")
        parts.append(
            _table(
                pl.DataFrame(inputs.timing["stats"]),
                {
                    c: "pct"
                    for c in (
                        "total_return",
                        "buy_hold_return",
                        "annual_return",
                        "max_drawdown",
                        "buy_hold_max_drawdown",
                    )
                },
            )
        )
    if inputs.factor_ic is not None:
        parts.append("<h2>Factor rank IC</h2>" + _table(inputs.factor_ic))
    for n in inputs.notes:
        parts.append(f"<p class='note'>{html.escape(n)}</p>")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Rotation report "
        f"{inputs.asof}</title><style>{CSS}</style><script>{get_plotlyjs()}</script>"
        f"</head><body>{''.join(parts)}<script type='application/json' id='report-data'>"
        f"{json.dumps({'asof': str(inputs.asof), 'performance': perf}, default=str)}"
        f"</script></body></html>"
    )
    atomic_write_bytes(Path(html_path), page.encode())
    atomic_write_bytes(Path(md_path), markdown_summary(inputs, perf).encode())
    return Path(html_path)


def markdown_summary(inputs: ReportInputs, perf: dict) -> str:
    lines = [f"# Industry rotation, week ending {inputs.asof}", ""]
    lines += ["| model | week | MTD | YTD (compounded) | YTD (summed) |", "|---|---|---|---|---|"]
    for name, p in perf.items():
        td = p["to_date"]
        lines.append(
            f"| {name} | {_pct(td['week']['excess_compounded'])} | "
            f"{_pct(td['mtd']['excess_compounded'])} | "
            f"{_pct(td['ytd']['excess_compounded'])} | "
            f"{_pct(td['ytd']['excess_summed'])} |"
        )
    if inputs.score_table is not None:
        held = inputs.score_table.filter(pl.col("held"))["industry"].to_list()
        buys = inputs.score_table.filter(pl.col("action") == "buy")["industry"].to_list()
        sells = inputs.score_table.filter(pl.col("action") == "sell")["industry"].to_list()
        lines += [
            "",
            f"**{inputs.models[0].name} holdings:** {', '.join(held)}",
            f"in: {', '.join(buys) or '–'}; out: {', '.join(sells) or '–'}",
        ]
        if absent := _absent(inputs.score_table):
            lines.append(f"No data this week (unscored, never held): {', '.join(absent)}")
    if inputs.di_rankings is not None:
        week = inputs.di_rankings.filter(pl.col("date") == inputs.di_rankings["date"].max())
        lines += [
            "",
            "**Top diffusion index:** "
            + ", ".join(
                f"{r['industry']} ({'–' if r['di'] is None else format(r['di'], '.2f')})"
                for r in week.sort("rank").head(6).to_dicts()
            ),
        ]
    if inputs.timing is not None:
        st = inputs.timing["series"].tail(1).to_dicts()[0]
        lines += [
            "",
            f"**Micro-cap DI:** {st['di']:.3f}; "
            + ", ".join(
                f"{k[6:]}: {'long' if v else 'flat'}"
                for k, v in st.items()
                if k.startswith("state_")
            ),
        ]
    return "\n".join(lines) + "\n"


def _absent(score_table: pl.DataFrame) -> list[str]:
    """Industries of the score table without data this week (older tables: none)."""
    if "in_data" not in score_table.columns:
        return []
    return score_table.filter(~pl.col("in_data"))["industry"].to_list()
