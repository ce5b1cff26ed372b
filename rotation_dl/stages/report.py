"""`report`: the weekly HTML + Markdown report from this run's stage outputs (a missing backtest
or baseline is run first)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from rotation_dl.config import RunConfig
from rotation_dl.stages.common import layout_of
from rotation_dl.stages.gaps import data_caveats
from rotation_dl.stages.inputs import backtest_returns, ic_label


def run_note(run: str, model_version: str | None, factor_panel: Path) -> str:
    """`run demo; GRU model v...; store version 3`: what the report's numbers come from."""
    from rotation_dl.artifacts import read_provenance

    parts = [f"run {run}"]
    if model_version:
        parts.append(f"GRU model {model_version}")
    store_version = read_provenance(factor_panel).get("store_version")
    if store_version is not None:
        parts.append(f"store version {store_version}")
    return "; ".join(parts)


@dataclass(frozen=True)
class ReportResult:
    html: Path
    markdown: Path

    def describe(self) -> str:
        return f"report: {self.html.resolve()}\n  summary: {self.markdown.resolve()}"


def report(cfg: RunConfig) -> ReportResult:
    """Weekly HTML + Markdown report of the GRU factor (or `factors=PATH`), the diffusion
    baseline, this week's scores, timing and factor IC."""
    from rotation_dl.export.scoring import latest_complete_week_end
    from rotation_dl.features.labels import forward_excess_from_returns
    from rotation_dl.report.weekly import ModelResult, ReportInputs, build_weekly_report
    from rotation_dl.stages.evaluate import (
        backtest,
        baseline,
        factor_panel_path,
        read_factor_panel,
    )

    layout = layout_of(cfg)
    bt = layout.backtest
    if cfg.factors or not bt.daily.exists():  # an explicit panel is always backtested afresh
        backtest(cfg)
    factors = read_factor_panel(factor_panel_path(cfg), cfg.backtest.factor_col)
    gru = ModelResult(
        cfg.report.gru_name, factors, pl.read_parquet(bt.daily), pl.read_parquet(bt.holdings)
    )
    models = [gru]
    di_rankings = None
    variant = cfg.baseline.variant
    if not cfg.data.series:  # the diffusion index needs constituents; series reports have none
        di_files = layout.diffusion(variant)
        if not di_files.daily.exists():
            baseline(cfg)
        models.append(
            ModelResult(
                f"{cfg.report.di_name} ({variant})",
                pl.read_parquet(layout.di_panel(variant)).rename({"di": "score"}),
                pl.read_parquet(di_files.daily),
                pl.read_parquet(di_files.holdings),
            )
        )
    latest = layout.latest_score()
    if cfg.report.asof:
        asof = date.fromisoformat(str(cfg.report.asof))
    elif latest is not None:
        asof = latest[0]
    else:
        asof = latest_complete_week_end(gru.daily["date"].to_list())
    timing = None
    tf = layout.timing
    if tf.table("series").exists():
        timing = {
            "series": pl.read_parquet(tf.table("series")),
            "grid": pl.read_parquet(tf.table("grid")),
            "stats": json.loads(tf.summary.read_text())["stats"],
        }
    if len(models) > 1:
        di_rankings = pl.read_parquet(layout.di_rankings(variant)).filter(pl.col("date") <= asof)
    fic = layout.factor_ic.table("summary")
    version = factors["model_version"][0] if "model_version" in factors.columns else None
    inputs = ReportInputs(
        asof=asof,
        models=models,
        forward=forward_excess_from_returns(backtest_returns(cfg), cfg.backtest.horizon),
        score_table=pl.read_parquet(latest[1]) if latest is not None else None,
        di_rankings=di_rankings,
        timing=timing,
        factor_ic=pl.read_parquet(fic) if fic.exists() else None,
        notes=[
            run_note(cfg.run, version, factor_panel_path(cfg)),
            *(data_caveats(cfg) if not cfg.data.series else []),
        ],
        horizon=cfg.backtest.horizon,
        forward_label=ic_label(cfg),
    )
    html = build_weekly_report(inputs, layout.report_file(asof), layout.report_file(asof, ".md"))
    return ReportResult(html, layout.report_file(asof, ".md"))
