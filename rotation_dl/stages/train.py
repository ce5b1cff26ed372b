"""`train`: industry bars -> cached panel -> walk-forward GRU -> factor panel, metrics and
checkpoints (`train -m hparams_search=...` runs `stages.sweep` instead)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from rotation_dl.artifacts import atomic_write_parquet, write_json
from rotation_dl.backtest.ic import describe_t
from rotation_dl.config import FeatureConfig, LoggerConfig, RunConfig, WalkForwardConfig
from rotation_dl.layout import RunLayout
from rotation_dl.models.config import GRUConfig, TrainConfig
from rotation_dl.provenance import code_version
from rotation_dl.session import Session
from rotation_dl.stages.inputs import ensure_industry_bars, layout_of

log = logging.getLogger(__name__)

ExtraCallbacks = Callable[[int, int], Sequence[Any]]


@dataclass(frozen=True)
class TrainResult:
    factor_panel: Path
    metrics_path: Path
    checkpoints: Path
    metrics: dict  # empty on non-zero ranks of a distributed run

    @property
    def objective(self) -> float:
        """The sweep objective: mean best validation rank IC over folds."""
        return float(self.metrics["mean_val_rank_ic"]) if self.metrics else float("nan")

    def describe(self) -> str:
        m = self.metrics
        if not m:  # a non-zero rank of a distributed run: rank zero reports
            return ""
        r = m["oos_rank_ic"]
        return (
            f"train: {m['folds']} fold(s), {m['test_dates']} out-of-sample dates; OOS rank IC "
            f"mean {r['mean']:.4f} ICIR {r['icir']:.3f} {describe_t(r)}; mean val rank IC "
            f"{m['mean_val_rank_ic']:.4f}\n  factor panel: {self.factor_panel}\n"
            f"  metrics: {self.metrics_path}\n  checkpoints: {self.checkpoints}"
        )


def train_walk_forward(
    industry_bars_path: Path,
    layout: RunLayout,
    *,
    features: FeatureConfig,
    net: GRUConfig,
    trainer: TrainConfig,
    walkforward: WalkForwardConfig,
    seeds: Sequence[int],
    session: Session,
    resume: bool = False,
    logger: LoggerConfig | None = None,
    run: str = "run",
    extra_callbacks: ExtraCallbacks | None = None,
) -> TrainResult:
    """Industry bars -> panel -> walk-forward training -> factor panel + metrics (via layout).

    Validates the whole plan (spec, folds) before anything is written, so a config mistake
    never replaces a good factor panel.
    """
    from rotation_dl.backtest.ic import ic_series, summarize_ic
    from rotation_dl.data.industry_build import infer_bar_minutes
    from rotation_dl.data.walkforward import walk_forward_folds
    from rotation_dl.features.panel import cached_panel
    from rotation_dl.models.tracking import logger_factory
    from rotation_dl.models.train import is_rank_zero, run_walk_forward

    bar_minutes = infer_bar_minutes(pl.scan_parquet(industry_bars_path))
    spec = features.spec(bar_minutes, session)
    panel = cached_panel(industry_bars_path, spec, layout.panel_cache)
    wf = walkforward
    folds = walk_forward_folds(
        len(panel.dates),
        warmup=spec.warmup_days(features.window),
        min_train_days=wf.min_train_days,
        val_days=wf.val_days,
        retrain_every=wf.retrain_every,
        gap=wf.gap,
        scheme=wf.scheme,
        train_days=wf.train_days,
        max_folds=wf.max_folds,
    )
    net_cfg = GRUConfig(**{**net.to_dict(), "n_features": panel.n_features})
    hparams = {
        "run": run,
        "net": net_cfg.to_dict(),
        "train": {**trainer.to_dict(), "window": features.window},
        "features": spec.to_dict(),
        "walkforward": asdict(wf),
        "seeds": list(seeds),
        "data_hash": panel.source_hash,
        "code_version": code_version(),
    }
    lg = logger or LoggerConfig()
    factory = logger_factory(lg.kind, layout.logs, run, hparams, lg.project, lg.entity, lg.group)
    result = run_walk_forward(
        panel,
        folds,
        net_cfg,
        trainer,
        features.window,
        layout.fold,
        seeds,
        resume,
        factory,
        meta={"data_hash": panel.source_hash, "run": run, "code_version": code_version()},
        extra_callbacks=extra_callbacks,
    )
    if not is_rank_zero():  # distributed training: artifacts come from rank zero only
        return TrainResult(layout.factor_panel, layout.train_metrics, layout.checkpoints, {})
    ic = ic_series(result.factor_panel, panel.labels_frame())
    metrics = {
        "run": run,
        "folds": len(folds),
        "test_dates": int(result.factor_panel["date"].n_unique()),
        "oos_rank_ic": summarize_ic(ic["rank_ic"], spec.horizon).to_dict(),
        "oos_ic": summarize_ic(ic["ic"], spec.horizon).to_dict(),
        "mean_val_rank_ic": result.mean_val_rank_ic,
        "fold_results": result.folds,
        "model_version": result.factor_panel["model_version"][0],
        "data_range": [str(panel.dates[0]), str(panel.dates[-1])],
        "hparams": hparams,
    }
    atomic_write_parquet(result.factor_panel, layout.factor_panel)
    write_json(metrics, layout.train_metrics)
    return TrainResult(layout.factor_panel, layout.train_metrics, layout.checkpoints, metrics)


def train(cfg: RunConfig, extra_callbacks: ExtraCallbacks | None = None) -> TrainResult:
    """Walk-forward GRU training of the run (industry bars are built first when missing)."""
    from rotation_dl.models.tracking import finish_wandb

    ib = ensure_industry_bars(cfg)
    try:
        return train_walk_forward(
            ib,
            layout_of(cfg),
            features=cfg.features,
            net=cfg.model,
            trainer=cfg.trainer,
            walkforward=cfg.walkforward,
            seeds=cfg.seeds,
            session=cfg.trading_session(),
            resume=cfg.resume,
            logger=cfg.logger,
            run=cfg.run,
            extra_callbacks=extra_callbacks,
        )
    finally:
        finish_wandb()
