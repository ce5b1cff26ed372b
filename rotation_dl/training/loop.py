"""Walk-forward training: one model (per seed) per fold, out-of-sample scores concatenated.

Per fold: fit normalisation on the fold's training days, train with early stopping on the
validation rank IC, reload the best checkpoint and score the test block. Each finished fold
writes its scores and a `done.json`; with `resume=True` finished folds are read back and an
interrupted fold continues from its `last.ckpt`, so a killed run ends with the same factor panel
as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import polars as pl
import torch
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping, ModelCheckpoint

from rotation_dl.artifacts import atomic_write_bytes, atomic_write_parquet, temp_name
from rotation_dl.features.panel import Panel
from rotation_dl.layout import FoldFiles
from rotation_dl.models.config import GRUConfig, TrainConfig
from rotation_dl.models.module import RotationModule
from rotation_dl.provenance import code_version
from rotation_dl.training.datamodule import PanelDataModule
from rotation_dl.training.walkforward import Fold

log = logging.getLogger(__name__)


@dataclass
class FoldResult:
    fold: int
    seed: int
    scores: pl.DataFrame
    best_val_rank_ic: float
    checkpoint: str
    epochs: int
    stock_scores: pl.DataFrame | None = None  # constituent models: date, symbol, score


@dataclass
class WalkForwardResult:
    factor_panel: pl.DataFrame
    folds: list[dict] = field(default_factory=list)
    seed_scores: pl.DataFrame | None = None  # date, industry, seed, score: each seed alone
    stock_panel: pl.DataFrame | None = None  # constituent models: date, symbol, score, fold
    stock_seed_scores: pl.DataFrame | None = None  # date, symbol, seed, score: each seed alone

    @property
    def mean_val_rank_ic(self) -> float:
        vals = [f["best_val_rank_ic"] for f in self.folds if np.isfinite(f["best_val_rank_ic"])]
        return float(np.mean(vals)) if vals else float("nan")


def is_rank_zero() -> bool:
    """True unless this process is a non-zero rank of a distributed (DDP) run."""
    from lightning.pytorch.utilities import rank_zero_only

    rank = getattr(rank_zero_only, "rank", None)
    if rank is None:
        rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    return int(rank) == 0


def _scores_frame(panel: Panel, preds: list[dict], fold: int, seed: int) -> pl.DataFrame:
    days = torch.cat([p["day"].cpu() for p in preds]).numpy()
    scores = torch.cat([p["score"].cpu() for p in preds]).numpy()  # [T, N]
    n = len(panel.industries)
    return pl.DataFrame(
        {
            "date": np.repeat(np.asarray(panel.dates, dtype="datetime64[D]")[days], n),
            "industry": np.tile(np.asarray(panel.industries), len(days)),
            "score": scores.reshape(-1).astype(np.float64),
            "valid": np.asarray(panel.active)[days].reshape(-1),
        }
    ).with_columns(
        pl.col("date").cast(pl.Date), pl.lit(fold).alias("fold"), pl.lit(seed).alias("seed")
    )


def predict_days(
    module: RotationModule, dm: PanelDataModule, days: Sequence[int], batch_dates: int
) -> list[dict]:
    """Scores for `days` with the module in eval mode, outside the Trainer: every rank of a
    distributed run computes the same full result (no sharding, no gather)."""
    module.eval()
    device = next(module.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(days), batch_dates):
            batch = dm.gather(torch.tensor(days[i : i + batch_dates], dtype=torch.long))
            x = batch["x"].to(device)
            out.append({"day": batch["day"].cpu(), "score": module(x).float().cpu()})
    return out


def predict_constituent_days(
    module, dm, days: Sequence[int], batch_dates: int
) -> tuple[list[dict], list[dict]]:
    """Industry scores (as `predict_days`) and stock scores of a constituent model."""
    module.eval()
    device = next(module.parameters()).device
    ind, stock = [], []
    with torch.no_grad():
        for i in range(0, len(days), batch_dates):
            batch = dm.gather(torch.tensor(days[i : i + batch_dates], dtype=torch.long))
            batch = {k: v.to(device) for k, v in batch.items()}
            s, n = module.scores(batch)
            ind.append({"day": batch["day"].cpu(), "score": n.cpu()})
            valid = batch["valid"]
            stock.append(
                {
                    "day": batch["day"].cpu(),
                    "stocks": batch["stocks"].cpu(),
                    "score": torch.where(valid, s, torch.nan).cpu(),
                }
            )
    return ind, stock


def _stock_scores_frame(sp, preds: list[dict], fold: int, seed: int) -> pl.DataFrame:
    """(date, symbol, score, active, fold, seed) of classified stocks on each test date."""
    frames = []
    dates = np.asarray(sp.dates, dtype="datetime64[D]")
    symbols = np.asarray(sp.symbols)
    active = np.asarray(sp.active)
    for p in preds:
        days, stocks, score = p["day"].numpy(), p["stocks"].numpy(), p["score"].numpy()
        b, s = np.nonzero(np.isfinite(score))
        frames.append(
            pl.DataFrame(
                {
                    "date": dates[days[b]],
                    "symbol": symbols[stocks[s]],
                    "score": score[b, s].astype(np.float64),
                    "active": active[days[b], stocks[s]],
                }
            )
        )
    return pl.concat(frames).with_columns(
        pl.col("date").cast(pl.Date), pl.lit(fold).alias("fold"), pl.lit(seed).alias("seed")
    )


def train_fold(
    panel: Panel,
    fold: Fold,
    net: GRUConfig,
    tc: TrainConfig,
    window: int,
    seed: int,
    files: FoldFiles,
    loggers: Sequence[Any] | bool = False,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
    extra_callbacks: Sequence[Any] = (),
    stock_panel: Any = None,
) -> FoldResult:
    """Train one model on `fold` and score its test block (see module docstring).
    Constituent models (`net.level` stock or pooled) read `stock_panel` too."""
    done = files.done
    stock_file = files.dir / "stock_scores.parquet"
    constituent = net.level != "industry"
    if resume and done.exists():
        info = json.loads(done.read_text())
        log.info("fold %d seed %d: done earlier, reading %s", fold.index, seed, files.dir)
        return FoldResult(
            fold.index,
            seed,
            pl.read_parquet(files.scores),
            info["best_val_rank_ic"],
            info["checkpoint"],
            info["epochs"],
            pl.read_parquet(stock_file) if constituent and stock_file.exists() else None,
        )
    L.seed_everything(seed, workers=True, verbose=False)
    common = {
        "seed": seed,
        "on_device": tc.on_device,
        "shuffle_labels": tc.shuffle_labels,
    }
    if constituent:
        from rotation_dl.training.stock_datamodule import StockDataModule

        if stock_panel is None:
            raise ValueError(f"model.level={net.level} needs the stock panel")
        dm = StockDataModule(
            stock_panel,
            panel,
            fold,
            window,
            tc.batch_dates,
            **common,
            max_stocks=net.max_stocks,
            max_constituents=net.max_constituents,
            panel_memory_gb=tc.panel_memory_gb,
            stock_targets=net.level == "stock",
        )
    else:
        dm = PanelDataModule(panel, fold, window, tc.batch_dates, **common)
    dm.setup()
    assert dm.norm is not None
    module_meta = {
        **(meta or {}),
        "feature_spec": panel.spec.to_dict(),
        "norm": dm.norm.to_dict(),
        "fold": fold.to_dict(),
        "train_range": [str(panel.dates[fold.train[0]]), str(panel.dates[fold.train[1] - 1])],
        "window": window,
        "industries": list(panel.industries),
        "seed": seed,
    }
    module_kw = {
        "net": net.to_dict(),
        "loss": asdict(tc.loss),
        "lr": tc.lr,
        "weight_decay": tc.weight_decay,
        "scheduler": tc.scheduler,
        "epoch_seed": seed,
        "compile": tc.compile,
        "meta": module_meta,
    }
    if constituent:
        from rotation_dl.models.module import ConstituentModule

        module_meta["stock_features"] = list(stock_panel.features)
        module = ConstituentModule(**module_kw, n_industries=len(panel.industries))
    else:
        module = RotationModule(**module_kw)
    ckpt = ModelCheckpoint(
        dirpath=files.dir,
        filename=files.best.stem,
        monitor="val/rank_ic",
        mode="max",
        save_last=False,  # AtomicLastCheckpoint writes last.ckpt after every epoch
        save_top_k=1,
        enable_version_counter=False,
    )
    stop = ResumableEarlyStopping(monitor="val/rank_ic", mode="max", patience=tc.patience)
    trainer = L.Trainer(
        max_epochs=tc.max_epochs,
        min_epochs=tc.min_epochs,
        accelerator=tc.accelerator,
        devices=tc.devices,
        num_nodes=tc.num_nodes,
        strategy=tc.strategy,
        precision=tc.resolved_precision(),
        deterministic=tc.deterministic,
        gradient_clip_val=tc.grad_clip or None,
        callbacks=[
            ckpt,
            AtomicLastCheckpoint(files.last),
            stop,
            StopAtBatchEnd(),
            *extra_callbacks,
        ],
        logger=loggers,
        enable_progress_bar=tc.enable_progress_bar,
        log_every_n_steps=tc.log_every_n_steps,
        limit_train_batches=tc.limit_train_batches,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    last = files.last
    if resume and last.exists():  # weights only: a planted pickle never reaches Lightning's loader
        from rotation_dl.models.checkpoint import safe_load_checkpoint

        safe_load_checkpoint(last)
    trainer.fit(module, dm, ckpt_path=str(last) if resume and last.exists() else None)
    best_path = ckpt.best_model_path or str(last)
    from rotation_dl.models.checkpoint import safe_load_checkpoint

    state = safe_load_checkpoint(best_path)
    module.load_state_dict(state["state_dict"])
    best = float(ckpt.best_model_score) if ckpt.best_model_score is not None else float("nan")
    stock_scores = None
    if constituent:
        preds, stock_preds = predict_constituent_days(module, dm, dm.days["test"], tc.batch_dates)
        stock_scores = _stock_scores_frame(stock_panel, stock_preds, fold.index, seed)
    else:
        preds = predict_days(module, dm, dm.days["test"], tc.batch_dates)
    scores = _scores_frame(panel, preds, fold.index, seed) if trainer.is_global_zero else None
    result = FoldResult(
        fold.index, seed, scores, best, best_path, trainer.current_epoch, stock_scores
    )
    if trainer.is_global_zero:
        if stock_scores is not None:
            atomic_write_parquet(stock_scores, stock_file)
        atomic_write_parquet(scores, files.scores)
        atomic_write_bytes(
            done,
            json.dumps(
                {
                    "best_val_rank_ic": best,
                    "checkpoint": best_path,
                    "epochs": trainer.current_epoch,
                }
            ).encode(),
        )
    return result


class ResumableEarlyStopping(EarlyStopping):
    """EarlyStopping whose decision survives a kill: a fold killed after the epoch that ran out
    of patience (its last.ckpt written, its done.json not yet) stops again at once on resume,
    instead of training one more epoch (Lightning does not store `trainer.should_stop`)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.wait_count >= self.patience and trainer.current_epoch >= (trainer.min_epochs or 0):
            trainer.should_stop = True


class AtomicLastCheckpoint(Checkpoint):
    """Writes `last.ckpt` at the end of every epoch, to a temporary name and then a rename, so a
    killed fold resumes from its latest epoch and never finds a half-written file.

    Lightning's own `save_last=True` (2.6) rewrites `last.ckpt` only when the monitored metric
    improves, so a resume replayed every epoch since the best one, and it writes in place. Being
    a `Checkpoint`, this runs after EarlyStopping's end-of-epoch check (validation runs every
    epoch here), so the file holds the updated patience count and a finished epoch.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tmp = temp_name(self.path) if trainer.is_global_zero else self.path
        trainer.save_checkpoint(tmp)  # every rank takes part; rank zero writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier("last_checkpoint")


class StopRequest:
    """A stop asked for by a signal: during a fit it is honoured at the next batch boundary
    (`StopAtBatchEnd`), so nothing is cut in the middle of a write; outside a fit at once."""

    def __init__(self) -> None:
        self.requested = False
        self.in_fit = False

    def request(self, error: BaseException) -> None:
        if not self.in_fit:
            raise error
        self.requested = True
        self.error = error


STOP = StopRequest()


class StopAtBatchEnd(L.Callback):
    """Raises the requested stop after the batch (or validation batch) in progress."""

    def on_fit_start(self, trainer, pl_module) -> None:
        STOP.in_fit = True

    def on_fit_end(self, trainer, pl_module) -> None:
        STOP.in_fit = False

    def on_exception(self, trainer, pl_module, exception) -> None:
        STOP.in_fit = False

    def _check(self) -> None:
        if STOP.requested:
            STOP.requested, STOP.in_fit = False, False
            raise STOP.error

    def on_train_batch_end(self, *args) -> None:
        self._check()

    def on_validation_batch_end(self, *args) -> None:
        self._check()


def seconds_per_batch(
    panel: Panel, fold: Fold, net: GRUConfig, tc: TrainConfig, window: int
) -> float:
    """Wall seconds of one training batch (forward, loss, backward, AdamW step) of an
    industry-level model on this machine: one full batch of `trainer.batch_dates` timed after
    a one-date warm-up step (a GRU's step costs nearly as much for one date as for many, so
    a smaller probe cannot be scaled). Trains nothing that is kept."""
    from rotation_dl.models.gru import build_net
    from rotation_dl.models.losses import make_loss

    torch.manual_seed(0)
    dm = PanelDataModule(panel, fold, window, tc.batch_dates, seed=0)
    dm.setup()
    model = build_net(net)
    loss_fn = make_loss(tc.loss)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr)
    train = dm.days["train"]
    seconds = 0.0
    for days in (train[:1], train[: tc.batch_dates]):  # warm-up, then the timed batch
        t0 = time.perf_counter()
        batch = dm.gather(torch.tensor(days, dtype=torch.long))
        loss = loss_fn(model(batch["x"]).float(), batch["y"], batch["mask"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        seconds = time.perf_counter() - t0
    return seconds


def estimate_text(
    panel: Panel,
    folds: Sequence[Fold],
    net: GRUConfig,
    tc: TrainConfig,
    window: int,
    seeds: int,
) -> str:
    """The plan's training-time estimate from a timing probe on this machine: per-batch time x
    batches per epoch (train + validation at a third of the cost) x max_epochs, over every
    fold and seed; an upper bound, since early stopping usually ends a fold sooner."""
    per = seconds_per_batch(panel, folds[0], net, tc, window)
    total = 0.0
    for f in folds:
        train = -(-(f.train[1] - f.train[0]) // tc.batch_dates)
        val = -(-(f.val[1] - f.val[0]) // tc.batch_dates)
        total += (train + val / 3) * per * tc.max_epochs
    first = folds[0]
    epoch = (-(-(first.train[1] - first.train[0]) // tc.batch_dates)) * per
    return (
        f"estimate on this machine: {per * 1e3:,.0f} ms per batch of {tc.batch_dates} dates "
        f"(timed), so about {_hms(epoch)} per epoch of fold 1 and at most "
        f"{_hms(total * seeds)} for {len(folds)} fold(s) x {seeds} seed(s) x "
        f"{tc.max_epochs} epochs (early stopping usually ends sooner)"
    )


class FoldClock:
    """Elapsed time and an ETA over a run's (fold, seed) trainings, each weighted by its
    training days (an expanding window's later folds take longer)."""

    def __init__(self, train_days: Sequence[int]) -> None:
        self.weights = list(train_days)
        self.done = 0
        self.start = time.perf_counter()
        self.last = self.start

    def tick(self, what: str) -> str:
        now = time.perf_counter()
        took, elapsed = now - self.last, now - self.start
        self.last = now
        self.done += 1
        finished = sum(self.weights[: self.done])
        left = sum(self.weights[self.done :])
        eta = elapsed / max(finished, 1) * left
        tail = f", ETA {_hms(eta)}" if left else ""
        return f"{what} done in {_hms(took)} (elapsed {_hms(elapsed)}{tail})"


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run_walk_forward(
    panel: Panel,
    folds: Sequence[Fold],
    net: GRUConfig,
    tc: TrainConfig,
    window: int,
    fold_files: Callable[[int, int], FoldFiles],
    seeds: Sequence[int] = (0,),
    resume: bool = False,
    logger_factory: Callable[[int, int], Any] | None = None,
    meta: dict[str, Any] | None = None,
    extra_callbacks: Callable[[int, int], Sequence[Any]] | None = None,
    stock_panel: Any = None,
    progress: Callable[[str], None] | None = None,
) -> WalkForwardResult:
    """Train every fold (and seed); returns the out-of-sample factor panel. After each
    (fold, seed), `progress` gets its time, the elapsed time and an ETA.

    The factor panel has one row per test date and industry: date, industry, score (mean over
    seeds), fold, model_version; scores of inactive industries are null.
    """
    clock = FoldClock([f.train[1] - f.train[0] for f in folds for _ in seeds])
    level = "" if net.level == "industry" else f"{net.level}-"
    version = f"{level}{net.arch}-h{net.hidden}l{net.layers}-{code_version()}"
    results: list[FoldResult] = []
    for fold in folds:
        for seed in seeds:
            log.info(
                "fold %d/%d seed %d: train %s..%s val %s..%s test %s..%s",
                fold.index + 1,
                len(folds),
                seed,
                *(
                    panel.dates[i]
                    for i in (
                        fold.train[0],
                        fold.train[1] - 1,
                        fold.val[0],
                        fold.val[1] - 1,
                        fold.test[0],
                        fold.test[1] - 1,
                    )
                ),
            )
            loggers = logger_factory(fold.index, seed) if logger_factory else False
            cbs = extra_callbacks(fold.index, seed) if extra_callbacks else ()
            res = train_fold(
                panel,
                fold,
                net,
                tc,
                window,
                seed,
                fold_files(fold.index, seed),
                loggers,
                resume,
                meta,
                cbs,
                stock_panel,
            )
            results.append(res)
            if progress is not None and is_rank_zero():
                progress(clock.tick(f"fold {fold.index + 1}/{len(folds)} seed {seed}"))
    frames = [r.scores for r in results if r.scores is not None]
    if not frames:
        return WalkForwardResult(pl.DataFrame(), [])
    scores = (
        pl.concat(frames)
        .group_by("date", "industry", "fold")
        .agg(pl.col("score").mean(), pl.col("valid").all())
        .with_columns(
            pl.when(pl.col("valid")).then(pl.col("score")).alias("score"),
            pl.lit(version).alias("model_version"),
        )
        .drop("valid")
        .sort("date", "industry")
    )
    fold_info = [
        {f.name: getattr(r, f.name) for f in fields(r) if f.name not in ("scores", "stock_scores")}
        for r in results
    ]
    per_seed = pl.concat(frames).select(
        "date",
        "industry",
        "seed",
        pl.when(pl.col("valid")).then(pl.col("score")).alias("score"),
    )
    stock_frames = [r.stock_scores for r in results if r.stock_scores is not None]
    stock = stock_seeds = None
    if stock_frames:
        stock_seeds = (
            pl.concat(stock_frames)
            .filter(pl.col("active"))
            .select("date", "symbol", "seed", "score")
        )  # the stock factor panel: mean over seeds, null where not active
        stock = (
            pl.concat(stock_frames)
            .group_by("date", "symbol", "fold")
            .agg(pl.col("score").mean(), pl.col("active").all())
            .with_columns(pl.lit(version).alias("model_version"))
            .sort("date", "symbol")
        )
    return WalkForwardResult(scores, fold_info, per_seed, stock, stock_seeds)
