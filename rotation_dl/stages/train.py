"""`train`: industry bars -> cached panel -> walk-forward GRU -> factor panel, metrics and
checkpoints (`train -m hparams_search=...` runs `stages.sweep` instead)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from rotation_dl.artifacts import atomic_write_parquet, write_json
from rotation_dl.backtest.ic import describe_t
from rotation_dl.config import FeatureConfig, LoggerConfig, RunConfig, WalkForwardConfig
from rotation_dl.layout import RunLayout
from rotation_dl.machine import cpu_threads
from rotation_dl.models.config import GRUConfig, TrainConfig
from rotation_dl.provenance import code_version
from rotation_dl.session import Session, bar_size_text
from rotation_dl.stages.common import layout_of
from rotation_dl.stages.gaps import data_caveats
from rotation_dl.stages.industry import ensure_industry_bars

log = logging.getLogger(__name__)
RUN_LOCK = "_train.lock"  # in the run's output folder

ExtraCallbacks = Callable[[int, int], Sequence[Any]]

# what `train`'s OOS IC is measured against (the backtest's IC says its own: `ic_label`)
TRAIN_IC_LABEL = (
    "forward {h}-day excess of the industry bars' close, rank-normalised (the training labels)"
)


def _stock_line(m: dict) -> str:
    s = m.get("oos_stock_rank_ic")
    return "" if not s else f"; OOS stock rank IC {s['mean']:.4f} ({describe_t(s)})"


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
        seeds = m.get("seed_oos_rank_ic") or {}
        per_seed = (
            f"; per seed {seeds['mean']:.4f} +- {seeds['std']:.4f} ({seeds['n_seeds']} seeds)"
            if seeds.get("n_seeds", 0) > 1
            else ""
        )
        return (
            f"train: {m['folds']} fold(s), {m['test_dates']} out-of-sample dates; OOS rank IC "
            f"(vs the training labels: industry bars) mean {r['mean']:.4f} ICIR "
            f"{r['icir']:.3f} {describe_t(r)}{per_seed}; mean val rank IC "
            f"{m['mean_val_rank_ic']:.4f}{_stock_line(m)}"
            + "".join(f"\n  caveat: {c}" for c in m.get("data_caveats", []))
            + f"\n  factor panel: {self.factor_panel}\n"
            f"  metrics: {self.metrics_path}\n  checkpoints: {self.checkpoints}"
        )


@dataclass(frozen=True)
class WalkForwardPlan:
    """The panel a run trains on, its feature spec and its folds (nothing trained yet)."""

    panel: Any  # features.panel.Panel
    spec: Any  # features.spec.FeatureSpec
    folds: list
    walkforward: WalkForwardConfig
    notes: tuple[str, ...] = ()  # what the plan chose for the data (a raised retrain_every)

    def describe(self) -> str:
        from rotation_dl.training.walkforward import plan_text

        size = bar_size_text(self.spec.bar_minutes)
        head = (
            f"panel: {len(self.panel.industries)} industries x {len(self.panel.dates)} days "
            f"({self.panel.dates[0]}..{self.panel.dates[-1]}), {size} bars, "
            f"{self.spec.bars_per_day} per day, {len(self.spec.features)} features"
        )
        body = plan_text(
            self.folds,
            self.panel.dates,
            gap=self.walkforward.gap,
            horizon=self.spec.horizon,
            scheme=self.walkforward.scheme,
        )
        notes = "".join(f"\n{n}" for n in self.notes)
        return f"{head}\n{body}{notes}"


def plan_walk_forward(
    industry_bars_path: Path,
    layout: RunLayout,
    features: FeatureConfig,
    walkforward: WalkForwardConfig,
    session: Session,
    series: bool = False,
) -> WalkForwardPlan:
    """Industry bars -> (cached) panel -> folds; raises ConfigError, naming the keys to change,
    when the history is too short."""
    from rotation_dl.features.panel import cached_panel, constant_features
    from rotation_dl.industry.build import infer_bar_minutes

    bar_minutes = infer_bar_minutes(pl.scan_parquet(industry_bars_path))
    spec = features.spec(bar_minutes, session, series=series)
    panel = cached_panel(industry_bars_path, spec, layout.panel_cache)
    notes: list[str] = []
    empty = constant_features(panel)
    if empty and features.names is None:  # asked for by name: kept, with the warning
        panel, spec = _without(panel, empty, notes)
    elif empty:
        log.warning("feature(s) %s carry nothing in these data (kept: named in features.names)",
                    ", ".join(empty))  # fmt: skip
    wf = walkforward
    warmup = spec.warmup_days(features.window)
    folds = folds_for(len(panel.dates), warmup, wf)
    if wf.fold_cap is not None and len(folds) > wf.fold_cap:
        test_days = sum(f.test[1] - f.test[0] for f in folds)
        every = -(-test_days // wf.fold_cap)
        planned = len(folds)
        folds = folds_for(len(panel.dates), warmup, wf, every)
        notes.append(
            f"retrain_every raised from {wf.retrain_every} to {every}: {planned} folds over "
            f"{test_days:,} test days is more than walkforward.fold_cap={wf.fold_cap} "
            f"(now {len(folds)}; set walkforward.retrain_every with walkforward.fold_cap=null "
            "to choose yourself)"
        )
    return WalkForwardPlan(panel, spec, folds, wf, tuple(notes))


def folds_for(
    n_days: int, warmup: int, wf: WalkForwardConfig, retrain_every: int | None = None
) -> list:
    """The walk-forward folds of `n_days` days under the `walkforward` settings (a new model
    every `retrain_every` days, default `wf.retrain_every`; the fold cap is the caller's)."""
    from rotation_dl.training.walkforward import walk_forward_folds

    return walk_forward_folds(
        n_days,
        warmup=warmup,
        min_train_days=wf.min_train_days,
        val_days=wf.val_days,
        retrain_every=retrain_every or wf.retrain_every,
        gap=wf.gap,
        scheme=wf.scheme,
        train_days=wf.train_days,
        max_folds=wf.max_folds,
    )


def _without(panel: Any, empty: dict[str, float | None], notes: list[str]) -> tuple[Any, Any]:
    """The panel without its empty features, with the warning logged and noted in the plan."""
    from rotation_dl.features.panel import without_features

    what = ", ".join(
        f"{f} ({'never defined' if v is None else f'always {v:g}'})" for f, v in empty.items()
    )
    text = (
        f"feature(s) left out: {what} in every active cell of these data (e.g. vwap_gap when "
        "amount is derived as close x volume); name them in features.names to keep them"
    )
    log.warning(text)
    notes.append(text)
    panel = without_features(panel, list(empty))
    return panel, panel.spec


def seed_rank_ics(
    seed_scores: pl.DataFrame | None,
    labels: pl.DataFrame,
    key: str = "industry",
    return_col: str = "fwd_excess",
) -> dict:
    """Each seed's own OOS mean rank IC, and their mean and std (ddof 1; NaN for one seed):
    how much of a result is the seed."""
    from rotation_dl.backtest.ic import ic_series

    if seed_scores is None or seed_scores.is_empty():
        return {"per_seed": {}, "mean": float("nan"), "std": float("nan"), "n_seeds": 0}

    def mean_rank_ic(frame: pl.DataFrame) -> float:
        value = ic_series(frame.drop("seed"), labels, key=key, return_col=return_col)[
            "rank_ic"
        ].mean()
        return float("nan") if value is None else float(value)  # no labelled date: NaN

    per_seed = {
        str(seed): mean_rank_ic(frame)
        for (seed,), frame in sorted(seed_scores.partition_by("seed", as_dict=True).items())
    }
    vals = pl.Series(list(per_seed.values()), dtype=pl.Float64).fill_nan(None).drop_nulls()
    mean, std = vals.mean(), (vals.std(ddof=1) if vals.len() > 1 else None)
    return {
        "per_seed": per_seed,
        "mean": float("nan") if mean is None else float(mean),
        "std": float("nan") if std is None else float(std),
        "n_seeds": vals.len(),
    }


def plan(cfg: RunConfig) -> WalkForwardPlan:
    """The run's walk-forward plan (industry bars are built first when missing), with an
    estimate of the training time from a timing probe on this machine; trains nothing."""
    from dataclasses import replace

    p = plan_walk_forward(
        ensure_industry_bars(cfg),
        layout_of(cfg),
        cfg.features,
        cfg.walkforward,
        cfg.trading_session(),
        cfg.data.series,
    )
    cpu_note = use_cpu_threads(cfg)
    if cfg.model.level != "industry":
        estimate = (
            f"estimate: not timed for model.level={cfg.model.level} (its stock panel is built "
            "when training starts)"
        )
    else:
        from rotation_dl.training.loop import estimate_text

        net = GRUConfig(**{**cfg.model.to_dict(), "n_features": p.panel.n_features})
        estimate = estimate_text(
            p.panel, p.folds, net, cfg.trainer, cfg.features.window, len(cfg.seeds)
        )
    return replace(p, notes=(*p.notes, cpu_note, estimate))


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
    series: bool = False,
    progress: Callable[[str], None] | None = None,
    stock_panel: Callable[[Any], Any] | None = None,
    caveats: Sequence[str] = (),
    cpu_note: str | None = None,
) -> TrainResult:
    """Industry bars -> panel -> walk-forward training -> factor panel + metrics (via layout).
    `series`: the industry bars are industry series (no constituent features). The plan
    (folds with their date ranges) goes to `progress` (default: the log) before training.

    Validates the whole plan (spec, folds) before anything is written, so a config mistake
    never replaces a good factor panel.
    """
    from rotation_dl.backtest.ic import ic_series, summarize_ic
    from rotation_dl.models.tracking import logger_factory
    from rotation_dl.training.loop import is_rank_zero, run_walk_forward

    wf = walkforward
    plan = plan_walk_forward(industry_bars_path, layout, features, wf, session, series)
    panel, spec, folds = plan.panel, plan.spec, plan.folds
    if is_rank_zero():
        (progress or log.info)(plan.describe() + (f"\n{cpu_note}" if cpu_note else ""))
    sp = None
    if net.level != "industry":  # constituent models read every stock's bars
        if stock_panel is None:
            raise ValueError(f"model.level={net.level} needs a stock panel builder")
        sp = stock_panel(panel)
        if is_rank_zero():
            (progress or log.info)(
                f"stock panel: {len(sp.symbols)} stocks x {len(sp.dates)} days, "
                f"{sp.n_features} features ({sp.x.dtype}), {sp.x.nbytes / 2**20:,.0f} MiB"
            )
    n_features = sp.n_features if sp is not None else panel.n_features
    net_cfg = GRUConfig(**{**net.to_dict(), "n_features": n_features})
    hparams = {
        "run": run,
        "net": net_cfg.to_dict(),
        "train": {**trainer.to_dict(), "window": features.window},
        "features": spec.to_dict(),
        "walkforward": asdict(wf),
        "seeds": list(seeds),
        "data_hash": panel.source_hash,
        "store_version": panel.extra.get("provenance", {}).get("store_version"),
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
        meta={
            "data_hash": panel.source_hash,
            "store_version": hparams["store_version"],
            "run": run,
            "code_version": code_version(),
        },
        extra_callbacks=extra_callbacks,
        stock_panel=sp,
        progress=progress or log.info,
    )
    if not is_rank_zero():  # distributed training: artifacts come from rank zero only
        return TrainResult(layout.factor_panel, layout.train_metrics, layout.checkpoints, {})
    labels = panel.labels_frame()
    ic = ic_series(result.factor_panel, labels)
    metrics = {
        "run": run,
        "folds": len(folds),
        "test_dates": int(result.factor_panel["date"].n_unique()),
        "oos_rank_ic": summarize_ic(ic["rank_ic"], spec.horizon).to_dict(),
        "oos_rank_ic_measured_against": TRAIN_IC_LABEL.format(h=spec.horizon),
        "data_caveats": list(caveats),
        "oos_ic": summarize_ic(ic["ic"], spec.horizon).to_dict(),
        "seed_oos_rank_ic": seed_rank_ics(result.seed_scores, labels),
        "model_level": net.level,
        "mean_val_rank_ic": result.mean_val_rank_ic,
        "fold_results": result.folds,
        "model_version": result.factor_panel["model_version"][0],
        "store_version": hparams["store_version"],
        "data_range": [str(panel.dates[0]), str(panel.dates[-1])],
        "hparams": hparams,
    }
    provenance = {**panel.extra.get("provenance", {}), "data_hash": panel.source_hash}
    if sp is not None and result.stock_panel is not None:
        stock_labels = sp.labels_frame()
        stock_ic = ic_series(
            result.stock_panel.filter(pl.col("active")),
            stock_labels,
            key="symbol",
            return_col="label",
        )
        metrics["oos_stock_rank_ic"] = summarize_ic(stock_ic["rank_ic"], spec.horizon).to_dict()
        metrics["seed_oos_stock_rank_ic"] = seed_rank_ics(
            result.stock_seed_scores, stock_labels, key="symbol", return_col="label"
        )
        metrics["stock_panel"] = {
            "stocks": len(sp.symbols),
            "features": list(sp.features),
            "storage": str(sp.x.dtype),
            "path": sp.extra.get("dir"),
        }
        atomic_write_parquet(result.stock_panel, layout.stock_factor_panel, provenance)
    atomic_write_parquet(result.factor_panel, layout.factor_panel, provenance)
    write_json(metrics, layout.train_metrics)
    return TrainResult(layout.factor_panel, layout.train_metrics, layout.checkpoints, metrics)


def train(
    cfg: RunConfig,
    extra_callbacks: ExtraCallbacks | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Walk-forward GRU training of the run (industry bars are built first when missing); the
    plan goes to `progress` before training starts."""
    with run_lock(layout_of(cfg).output_dir):
        return _train(cfg, extra_callbacks, progress)


@contextlib.contextmanager
def run_lock(output_dir: Path) -> Iterator[None]:
    """One `train` at a time per output folder (its logs, metrics and factor panel): a second
    one is refused at once with RunLockedError. DDP's other ranks, started by rank 0's run,
    share its lock. A failed first run leaves no folder holding only the lock."""
    from rotation_dl.artifacts import folder_lock
    from rotation_dl.errors import RunLockedError

    if any(os.environ.get(k, "0") != "0" for k in ("LOCAL_RANK", "RANK", "NODE_RANK")):
        yield
        return
    created = [d for d in (output_dir, *output_dir.parents) if not d.exists()]

    def refuse(holder: str) -> RunLockedError:
        return RunLockedError(
            f"{output_dir}: another train ({holder}) is writing this run's outputs; wait for "
            "it to finish or set paths.output_dir"
        )

    try:
        with folder_lock(output_dir, RUN_LOCK, 0.0, refuse):
            yield
    finally:
        if output_dir in created and [p.name for p in output_dir.iterdir()] == [RUN_LOCK]:
            (output_dir / RUN_LOCK).unlink()
            for d in created:  # deepest first
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()


def _train(
    cfg: RunConfig,
    extra_callbacks: ExtraCallbacks | None,
    progress: Callable[[str], None] | None,
) -> TrainResult:

    from rotation_dl.models.tracking import finish_wandb

    ib = ensure_industry_bars(cfg)
    cpu_note = use_cpu_threads(cfg)
    builder = None
    if cfg.model.level != "industry":
        from rotation_dl.stages.stock_panel import stock_panel_for

        def builder(panel):
            return stock_panel_for(cfg, panel, ib)

    try:
        with sigterm_stops_training():
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
                series=cfg.data.series,
                progress=progress,
                stock_panel=builder,
                caveats=data_caveats(cfg) if not cfg.data.series else (),
                cpu_note=cpu_note,
            )
    finally:
        finish_wandb()


def use_cpu_threads(cfg: RunConfig) -> str:
    """Set torch's CPU threads for this machine and run (`machine.cpu_threads`); the line
    that says so."""
    import torch

    threads, why = cpu_threads(cfg.trainer.cpu_threads, training_processes(cfg))
    torch.set_num_threads(threads)
    return f"CPU threads: {threads} ({why})"


def training_processes(cfg: RunConfig) -> int:
    """Processes training on this machine at once: sweep workers, DDP ranks on the CPU."""
    n = 1
    hs = cfg.hparams_search
    if hs is not None and (cfg.sweep_worker or hs.workers > 1):
        n *= hs.workers
    tc = cfg.trainer
    if tc.accelerator == "cpu" and str(tc.strategy).startswith("ddp"):
        n *= tc.devices if isinstance(tc.devices, int) else 1
    return n


@contextlib.contextmanager
def sigterm_stops_training() -> Iterator[None]:
    """SIGTERM (a scheduler's stop, `kill`) or SIGINT (Ctrl-C) stops training with
    TrainingStopped at the next batch boundary (at once outside a fit): Lightning tears the fit
    down, checkpoints of finished epochs stay, and `resume=true` goes on. (Left to Lightning, a
    Ctrl-C ended only the fold in progress, which was then recorded as finished, and the run
    went on.) A second signal ends the process at once. Only the main thread can hold a signal
    handler; elsewhere nothing changes."""
    import signal
    import threading

    from rotation_dl.errors import TrainingStopped

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    from rotation_dl.training.loop import STOP

    def stop(signum, frame) -> None:
        name = signal.Signals(signum).name
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal ends the process
            signal.signal(sig, signal.SIG_DFL)
        STOP.request(  # at the next batch boundary during a fit, else at once
            TrainingStopped(
                f"stopped by {name}; the checkpoints of finished epochs and folds are kept: "
                "run the same command with resume=true to go on",
                exit_status=128 + signum,
            )
        )

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
