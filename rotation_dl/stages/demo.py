"""`demo`: every stage in order on the configured market (the sample market by default), with
progress, ending in the weekly report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rotation_dl.config import RunConfig
from rotation_dl.stages import evaluate, export, industry, ingest, report, score, train
from rotation_dl.stages.common import layout_of

STEPS: list[tuple[str, Callable[[RunConfig], Any]]] = [
    ("generate sample market", ingest.sample),
    ("ingest raw bars", ingest.ingest),
    ("build industry bars", industry.industry_bars),
    ("walk-forward GRU training", train.train),
    ("export to ONNX", export.export),
    ("score the latest week (onnxruntime)", score.score),
    ("backtest the GRU factor", evaluate.backtest),
    ("diffusion-index baseline", evaluate.baseline),
    ("micro-cap timing", evaluate.timing),
    ("factor IC monitor", evaluate.factor_ic),
    ("weekly report", report.report),
]

CONSTITUENT_STEPS = ("diffusion-index baseline", "micro-cap timing", "factor IC monitor")


@dataclass(frozen=True)
class DemoResult:
    output_dir: Path
    report: Path | None
    seconds: float

    def describe(self) -> str:
        text = f"demo finished in {self.seconds:.0f}s; outputs: {self.output_dir.resolve()}"
        if self.report is not None:
            text += f"\nopen the report: {self.report.resolve()}"
        return text


def demo(cfg: RunConfig, progress: Callable[[str], None] = print) -> DemoResult:
    """Run every stage; `progress` receives each step's header and result text."""
    steps = STEPS if cfg.data.kind == "sample" else STEPS[1:]
    if cfg.data.series:  # industry series: no constituents for the DI, timing and factor IC
        steps = [s for s in steps if s[0] not in CONSTITUENT_STEPS]
    t_all = time.perf_counter()
    html = None
    for k, (name, stage) in enumerate(steps, 1):
        t0 = time.perf_counter()
        progress(f"[{k}/{len(steps)}] {name} ...")
        result = stage(cfg, progress=progress) if stage is train.train else stage(cfg)
        progress(result.describe())
        if isinstance(result, report.ReportResult):
            html = result.html
        progress(f"      done in {time.perf_counter() - t0:.1f}s")
    return DemoResult(layout_of(cfg).output_dir, html, time.perf_counter() - t_all)
