"""RunLayout: every artifact path of a run, in one place.

Writers and readers both ask the layout for a path; no module builds or parses another module's
file names. The configurable roots come from the `paths` config group; everything below them is
fixed here::

    <output_dir>/factor_panel.parquet, train_metrics.json, logs/
    <output_dir>/stock_factor_panel.parquet  stock scores of constituent models
    <paths.panel_cache>/stock-<key>/     stock panel arrays (features.stock_panel)
    <paths.store>/                       canonical store
    <paths.industry_bars>                industry bars (parquet)
    <paths.panel_cache>/panel-<key>/     panel tensors (features.panel)
    <paths.checkpoints>/fold_XX/seed_N/  best.ckpt, last.ckpt, scores.parquet, done.json
    <paths.onnx>/fold_XX_seed_N.onnx     fp32 models; variants in <paths.onnx>/<kind>/
    <output_dir>/backtest/               backtest_{daily,holdings,rebalances,years}.parquet|csv
    <output_dir>/baseline/               diffusion_<variant>_*, di_<variant>*.parquet
    <output_dir>/timing/                 timing_{series,grid,signals,curves}, timing_summary.json
    <output_dir>/factor_ic/              factor_ic_weekly, factor_ic_summary(.json)
    <output_dir>/compare/                compare.json, compare_ic.parquet, compare.html
    <paths.score>/score_<date>.parquet|csv|json
    <paths.report>/report_<date>.html|md
    <paths.sweeps>/<study>/trials.parquet|csv, data/, panel_cache/
    <output_dir>/production/             the cycle: registry/, score_history/ (Delta tables),
                                         industry_bars/ (parts), checkpoints/, models/vNNNN/
    <output_dir>/monitor/                monitor.parquet, psi.parquet
    <paths.report>/cycle_<date>.html     the cycle's weekly report
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol


class _Paths(Protocol):
    output_dir: str
    store: str
    checkpoints: str
    panel_cache: str
    industry_bars: str
    onnx: str
    score: str
    report: str
    sweeps: str


@dataclass(frozen=True)
class TableSet:
    """The files of one backtest (the GRU's, or one DI variant's): `<dir>/<name>_<part>`."""

    dir: Path
    name: str

    def table(self, part: str) -> Path:
        return self.dir / f"{self.name}_{part}.parquet"

    @property
    def daily(self) -> Path:
        return self.table("daily")

    @property
    def holdings(self) -> Path:
        return self.table("holdings")

    @property
    def rebalances(self) -> Path:
        return self.table("rebalances")

    @property
    def summary(self) -> Path:
        return self.dir / f"{self.name}_summary.json"


@dataclass(frozen=True)
class FoldFiles:
    """One (fold, seed) training folder: best/last checkpoints, test scores, a done marker."""

    dir: Path

    @property
    def best(self) -> Path:
        return self.dir / "best.ckpt"

    @property
    def last(self) -> Path:
        return self.dir / "last.ckpt"

    @property
    def scores(self) -> Path:
        return self.dir / "scores.parquet"

    @property
    def done(self) -> Path:
        return self.dir / "done.json"


@dataclass(frozen=True)
class CheckpointRef:
    fold: int
    seed: int
    path: Path


@dataclass(frozen=True)
class RunLayout:
    output_dir: Path
    store: Path
    checkpoints: Path
    panel_cache: Path
    industry_bars: Path
    onnx_dir: Path
    score_dir: Path
    report_dir: Path
    sweeps: Path

    @classmethod
    def from_paths(cls, paths: _Paths) -> RunLayout:
        return cls(
            Path(paths.output_dir),
            Path(paths.store),
            Path(paths.checkpoints),
            Path(paths.panel_cache),
            Path(paths.industry_bars),
            Path(paths.onnx),
            Path(paths.score),
            Path(paths.report),
            Path(paths.sweeps),
        )

    # ---- training ------------------------------------------------------------------------
    @property
    def gap_factors(self) -> Path:
        """data.on_unadjusted=drop: the adjustment factors that leave the flagged stock-days'
        overnight moves out (beside `gap_report`, their count and the store version)."""
        return self.output_dir / "gaps" / "gap_factors.parquet"

    @property
    def gap_report(self) -> Path:
        return self.output_dir / "gaps" / "gaps.json"

    @property
    def factor_panel(self) -> Path:
        return self.output_dir / "factor_panel.parquet"

    @property
    def stock_factor_panel(self) -> Path:
        """Constituent models' out-of-sample stock scores (date, symbol, score, fold)."""
        return self.output_dir / "stock_factor_panel.parquet"

    @property
    def train_metrics(self) -> Path:
        return self.output_dir / "train_metrics.json"

    @property
    def logs(self) -> Path:
        return self.output_dir / "logs"

    def fold(self, fold: int, seed: int) -> FoldFiles:
        return FoldFiles(self.checkpoints / f"fold_{fold:02d}" / f"seed_{seed}")

    def latest_checkpoints(self) -> list[CheckpointRef]:
        """Best checkpoints of the latest fold that has any, one per seed."""
        folds: dict[int, list[CheckpointRef]] = {}
        if self.checkpoints.is_dir():
            for fold_dir in self.checkpoints.iterdir():
                fold = _index(fold_dir.name, "fold_")
                if fold is None or not fold_dir.is_dir():
                    continue
                for seed_dir in fold_dir.iterdir():
                    seed = _index(seed_dir.name, "seed_")
                    best = FoldFiles(seed_dir).best
                    if seed is not None and best.is_file():
                        folds.setdefault(fold, []).append(CheckpointRef(fold, seed, best))
        if not folds:
            return []
        return sorted(folds[max(folds)], key=lambda c: c.seed)

    # ---- ONNX ----------------------------------------------------------------------------
    def onnx_model(self, fold: int, seed: int) -> Path:
        return self.onnx_dir / f"fold_{fold:02d}_seed_{seed}.onnx"

    def onnx_variant(self, fp32: Path, kind: str) -> Path:
        return fp32.parent / kind / fp32.name

    def onnx_models(self) -> list[Path]:
        """The fp32 models (variants live in sub-folders, so they are never mixed in)."""
        return sorted(self.onnx_dir.glob("*.onnx")) if self.onnx_dir.is_dir() else []

    # ---- evaluation ----------------------------------------------------------------------
    @property
    def backtest(self) -> TableSet:
        return TableSet(self.output_dir / "backtest", "backtest")

    @property
    def baseline_dir(self) -> Path:
        return self.output_dir / "baseline"

    def diffusion(self, variant: str) -> TableSet:
        return TableSet(self.baseline_dir, f"diffusion_{variant}")

    def di_panel(self, variant: str) -> Path:
        return self.baseline_dir / f"di_{variant}.parquet"

    def di_rankings(self, variant: str) -> Path:
        return self.baseline_dir / f"di_{variant}_weekly_rankings.parquet"

    @property
    def diffusion_summary(self) -> Path:
        return self.baseline_dir / "diffusion_summary.json"

    @property
    def timing(self) -> TableSet:
        return TableSet(self.output_dir / "timing", "timing")

    @property
    def timing_signal_log(self) -> Path:
        """One row per switch of each timing machine: date, machine, state, di."""
        return self.output_dir / "timing" / "signal_log.parquet"

    @property
    def compare_dir(self) -> Path:
        """`compare`: compare.json, compare_ic.parquet (per-date IC) and compare.html."""
        return self.output_dir / "compare"

    @property
    def factor_ic(self) -> TableSet:
        return TableSet(self.output_dir / "factor_ic", "factor_ic")

    # ---- production ----------------------------------------------------------------------
    def score_file(self, asof: date, suffix: str = ".parquet") -> Path:
        return self.score_dir / f"score_{asof.isoformat()}{suffix}"

    def latest_score(self) -> tuple[date, Path] | None:
        """(date, parquet path) of the latest score written, if any."""
        found = []
        if self.score_dir.is_dir():
            for p in self.score_dir.glob("score_*.parquet"):
                try:
                    found.append((date.fromisoformat(p.stem.removeprefix("score_")), p))
                except ValueError:
                    continue
        return max(found) if found else None

    def report_file(self, asof: date, suffix: str = ".html") -> Path:
        return self.report_dir / f"report_{asof.isoformat()}{suffix}"

    # ---- the weekly cycle (`rotation-dl cycle`) --------------------------------------------
    @property
    def production(self) -> Path:
        """The cycle's own state: registry, score history, bars, checkpoints, models."""
        return self.output_dir / "production"

    @property
    def registry(self) -> Path:
        return self.production / "registry"

    @property
    def score_history(self) -> Path:
        return self.production / "score_history"

    @property
    def production_bars(self) -> Path:
        """Industry bars the cycle appends to each week: a folder of parts and their state."""
        return self.production / "industry_bars"

    @property
    def production_train_bars(self) -> Path:
        """The cycle's bars as one file, written for a retrain (what training reads)."""
        return self.production / "train_bars.parquet"

    @property
    def production_panel_cache(self) -> Path:
        return self.production / "panel_cache"

    def production_fold(self, fold: int, seed: int) -> FoldFiles:
        return FoldFiles(self.production / "checkpoints" / f"fold_{fold:02d}" / f"seed_{seed}")

    def production_models(self, version: int) -> Path:
        return self.production / "models" / f"v{version:04d}"

    @property
    def monitor_dir(self) -> Path:
        return self.output_dir / "monitor"

    @property
    def monitor(self) -> Path:
        """One row per published week: outcome, live IC against the band, drift, health."""
        return self.monitor_dir / "monitor.parquet"

    @property
    def monitor_psi(self) -> Path:
        """PSI of each input feature for each published week."""
        return self.monitor_dir / "psi.parquet"

    def cycle_report(self, asof: date) -> Path:
        return self.report_dir / f"cycle_{asof.isoformat()}.html"

    def sweep_dir(self, study: str) -> Path:
        return self.sweeps / study

    def sweep_industry_bars(self, study: str) -> str:
        """Industry bars the trials share, one file per bar size (a Hydra interpolation)."""
        data = self.sweep_dir(study).resolve() / "data"
        return f"{data}/industry_bars_${{industry.bar_minutes}}.parquet"

    def sweep_panel_cache(self, study: str) -> Path:
        return self.sweep_dir(study) / "panel_cache"

    def sweep_trials(self, study: str) -> Path:
        """The trials table (parquet; a CSV beside it)."""
        return self.sweep_dir(study) / "trials.parquet"

    @staticmethod
    def best_sweep_config(config_dir: Path, study: str) -> Path:
        """The best trial as an experiment config: `<config_dir>/<study>_best.yaml`."""
        return config_dir / f"{study}_best.yaml"


def _index(name: str, prefix: str) -> int | None:
    rest = name.removeprefix(prefix)
    return int(rest) if name.startswith(prefix) and rest.isdigit() else None
