"""Benchmark: the constituent-level path on a synthetic market of 5,000 stocks x 250 days x 16
bars (and 2x the days), measured side by side in one run. Writes outputs/bench/stock.json.

* panel      - store -> stock panel (features, labels, masks, membership), each size in its
               own process: seconds and peak RSS (ru_maxrss of that child);
* training   - stock-sequences/s of three loops on the same panel, network and batch (B dates
               x `max_stocks` stocks): `pipeline` (StockDataModule index gathers + the
               ConstituentModule through a Lightning Trainer, what `rotation-dl train` runs),
               `qlib_style` (every sample's window sliced from per-stock NumPy arrays,
               stacked and copied with torch.from_numpy(...).to(device) per batch, on
               pre-normalised data, as Qlib's TSDataSampler + DataLoader), and `model_only`
               (forward/backward/step on one pre-built batch: the floor);
* score      - `rotation-dl score` end to end (a fresh process: store -> industry bars of the
               last weeks -> stock panel -> onnxruntime -> stock and industry tables) with a
               `stock` model on all 5,000 stocks.

Keys: device, panel_build_s, panel_peak_rss_mb, panel_peak_rss_mb_2x_days, seq_per_s,
speedup_vs_qlib_style, pipeline_overhead (1 - pipeline seq/s / model-only seq/s),
score_5000_seconds. Run: `python scripts/bench_stock.py` (`--stocks 500` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WINDOW, HIDDEN, LAYERS = 10, 32, 1


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sample_overrides(raw: Path) -> list[str]:
    """The sample market of `raw` (named raw_<stocks>x<days>), generated on first use."""
    stocks, days = (int(v) for v in raw.name.removeprefix("raw_").split("x"))
    return ["data=sample", f"data.raw_dir={raw}", f"data.sample.n_stocks={stocks}",
            f"data.sample.n_days={days}", "data.sample.bar_minutes=15", "data.sample.seed=3",
            "data.sample.stock_signal_strength=1.0"]  # fmt: skip


def _cfg(raw: Path, work: Path, *extra: str):
    from rotation_dl.config import compose_run

    return compose_run(
        [
            *_sample_overrides(raw),
            f"paths.output_dir={work}",
            f"paths.checkpoints={work / 'ck'}",
            "model=stock",
            f"features.window={WINDOW}",
            *extra,
        ]
    )


def child_prepare(raw: Path, work: Path) -> dict:
    """Store and industry bars (not measured: the ingest benchmark covers them)."""
    from rotation_dl.stages.industry import industry_bars
    from rotation_dl.stages.ingest import ingest

    cfg = _cfg(raw, work)
    if not Path(cfg.paths.industry_bars).exists():
        ingest(cfg)
        industry_bars(cfg)
    return {}


def _plan(raw: Path, work: Path):
    """The industry panel and spec (no walk-forward plan: any history length will do)."""
    from types import SimpleNamespace

    import polars as pl

    from rotation_dl.features.panel import cached_panel
    from rotation_dl.industry.build import infer_bar_minutes
    from rotation_dl.layout import RunLayout

    cfg = _cfg(raw, work)
    ib = Path(cfg.paths.industry_bars)
    spec = cfg.features.spec(infer_bar_minutes(pl.scan_parquet(ib)), cfg.trading_session())
    panel = cached_panel(ib, spec, RunLayout.from_paths(cfg.paths).panel_cache)
    return SimpleNamespace(panel=panel, spec=spec)


def child_panel(raw: Path, work: Path) -> dict:
    from rotation_dl.stages.stock_panel import stock_panel_for

    cfg = _cfg(raw, work)
    p = _plan(raw, work)
    shutil.rmtree(work / "panel_cache", ignore_errors=True)  # measure a build, not a hit
    p = _plan(raw, work)  # (the industry panel: rebuilt before the clock starts)
    t0 = time.perf_counter()
    sp = stock_panel_for(cfg, p.panel, Path(cfg.paths.industry_bars))
    return {
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": _rss_mb(),
        "shape": list(sp.x.shape),
        "panel_mb": sp.x.nbytes / 2**20,
    }


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def child_train(raw: Path, work: Path, steps: int, warmup: int, batch_dates: int,
                max_stocks: int, rounds: int) -> dict:  # fmt: skip
    import lightning as L
    import numpy as np
    import torch

    from rotation_dl.features.normalize import normalise
    from rotation_dl.models.config import GRUConfig
    from rotation_dl.models.constituents import StockScorer
    from rotation_dl.models.losses import mse_loss
    from rotation_dl.models.module import ConstituentModule
    from rotation_dl.stages.stock_panel import stock_panel_for
    from rotation_dl.training.stock_datamodule import StockDataModule
    from rotation_dl.training.walkforward import walk_forward_folds

    cfg = _cfg(raw, work)
    p = _plan(raw, work)
    sp = stock_panel_for(cfg, p.panel, Path(cfg.paths.industry_bars))
    panel = p.panel
    fold = walk_forward_folds(len(panel.dates), warmup=WINDOW + 5,
                              min_train_days=min(120, len(panel.dates) // 2), val_days=5,
                              retrain_every=20, gap=5)[0]  # fmt: skip
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n_ind = len(panel.industries)
    net_cfg = GRUConfig(n_features=sp.n_features, hidden=HIDDEN, layers=LAYERS, dropout=0.1,
                        level="stock", max_stocks=max_stocks)  # fmt: skip
    per_step = batch_dates * max_stocks

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.t0 = self.t1 = None
            self.steps = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == warmup and self.t0 is None:
                _sync()
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if self.t0 is not None:
                self.steps += 1
                _sync()
                self.t1 = time.perf_counter()

    def pipeline() -> float:
        dm = StockDataModule(sp, panel, fold, WINDOW, batch_dates, seed=0,
                             on_device=device != "cpu", max_stocks=max_stocks)  # fmt: skip
        module = ConstituentModule(net=net_cfg.to_dict(), loss={"name": "mse"}, lr=1e-3,
                                   scheduler=None, n_industries=n_ind)  # fmt: skip
        timer = StepTimer()
        trainer = L.Trainer(
            max_steps=steps + warmup, accelerator="gpu" if device != "cpu" else "cpu",
            devices=1, precision="bf16-mixed" if device != "cpu" else "32-true", logger=False,
            enable_checkpointing=False, callbacks=[timer], enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
            max_epochs=10_000,
        )  # fmt: skip
        trainer.fit(module, dm)
        return (timer.t1 - timer.t0) / timer.steps

    dm = StockDataModule(sp, panel, fold, WINDOW, batch_dates, seed=0, max_stocks=max_stocks)
    dm.setup()
    days = np.array(dm.days["train"])

    def qlib_style() -> float:
        # Qlib keeps one normalised [rows, features] frame per instrument and slices each
        # sample's step_len rows, then the DataLoader stacks and the loop copies to the device
        P, F = sp.x.shape[2], sp.x.shape[3]
        lo = int(days.min()) - WINDOW + 1
        z = normalise(np.asarray(sp.x[lo : int(days.max()) + 1]), dm.norm)
        per_stock = [np.ascontiguousarray(z[:, s].reshape(-1, F)) for s in range(z.shape[1])]
        label = np.nan_to_num(np.asarray(sp.label, dtype=np.float32))
        rng = np.random.default_rng(0)
        net = StockScorer(net_cfg, n_ind).encoder.to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        t0, n = None, 0
        while n < steps + warmup:
            if n == warmup:
                _sync()
                t0 = time.perf_counter()
            batch_days = rng.choice(days, batch_dates, replace=False)
            stocks = rng.choice(len(per_stock), max_stocks, replace=False)
            xs, ys = [], []
            for d in batch_days:
                end = (d - lo + 1) * P
                for s in stocks:
                    xs.append(per_stock[s][end - WINDOW * P : end])
                    ys.append(label[d, s])
            feature = torch.from_numpy(np.stack(xs)).float().to(device)
            y = torch.from_numpy(np.asarray(ys)).float().to(device)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16,
                                enabled=device != "cpu"):  # fmt: skip
                pred = net(feature.reshape(batch_dates, max_stocks, WINDOW, P, F)).float()
            loss = torch.mean((pred.reshape(-1) - y) ** 2)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            n += 1
        _sync()
        return (time.perf_counter() - t0) / steps

    def model_only() -> float:
        batch = dm.gather(torch.tensor(days[:batch_dates]), train=True)
        x = batch["x"].to(device)
        y = batch["y_stock"].to(device)
        m = torch.ones_like(y, dtype=torch.bool)
        net = StockScorer(net_cfg, n_ind).encoder.to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        for k in range(steps + warmup):
            if k == warmup:
                _sync()
                t0 = time.perf_counter()
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16,
                                enabled=device != "cpu"):  # fmt: skip
                pred = net(x).float()
            loss = mse_loss(pred, y, m)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
        _sync()
        return (time.perf_counter() - t0) / steps

    t_pipe = t_qlib = t_model = float("inf")
    runs = []
    for _ in range(rounds):  # interleaved; each keeps its best round (the first warms up)
        r = {"model_only": model_only(), "qlib_style": qlib_style(), "pipeline": pipeline()}
        runs.append(r)
        t_model, t_qlib, t_pipe = (min(t_model, r["model_only"]), min(t_qlib, r["qlib_style"]),
                                   min(t_pipe, r["pipeline"]))  # fmt: skip
    name = torch.cuda.get_device_name(0) if device == "cuda" else (
        f"cpu ({torch.get_num_threads()} threads)")  # fmt: skip
    return {
        "device": name,
        "seq_per_step": per_step,
        "step_s": {"pipeline": t_pipe, "qlib_style": t_qlib, "model_only": t_model},
        "rounds": runs,
        "seq_per_s": per_step / t_pipe,
        "qlib_style_seq_per_s": per_step / t_qlib,
        "model_only_seq_per_s": per_step / t_model,
        "speedup_vs_qlib_style": t_qlib / t_pipe,
        "pipeline_overhead": 1 - t_model / t_pipe,
    }


def child_model(raw: Path, work: Path) -> dict:
    """A `stock` model (random weights, the real metadata) exported to ONNX for `score`."""
    import numpy as np
    import torch

    from rotation_dl.export.onnx_export import export_onnx
    from rotation_dl.models.config import GRUConfig
    from rotation_dl.models.module import ConstituentModule
    from rotation_dl.stages.stock_panel import stock_panel_for
    from rotation_dl.training.stock_datamodule import fit_stock_norm

    cfg = _cfg(raw, work)
    p = _plan(raw, work)
    sp = stock_panel_for(cfg, p.panel, Path(cfg.paths.industry_bars))
    norm = fit_stock_norm(sp, np.arange(WINDOW + 5, len(sp.dates) // 2))
    net = GRUConfig(n_features=sp.n_features, hidden=HIDDEN, layers=LAYERS, level="stock")
    meta = {"feature_spec": p.spec.to_dict(), "norm": norm.to_dict(), "window": WINDOW,
            "industries": list(p.panel.industries), "stock_features": list(sp.features),
            "seed": 0, "fold": {"index": 0}}  # fmt: skip
    module = ConstituentModule(net=net.to_dict(), meta=meta, n_industries=len(sp.industries))
    ckpt = work / "bench_stock.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)},
               ckpt)  # fmt: skip
    path, _ = export_onnx(ckpt, work / "bench_stock.onnx")
    return {"onnx": str(path)}


def _child(mode: str, raw: Path, work: Path, args: argparse.Namespace) -> dict:
    if mode == "prepare":
        return child_prepare(raw, work)
    if mode == "panel":
        return child_panel(raw, work)
    if mode == "model":
        return child_model(raw, work)
    if mode == "train":
        return child_train(raw, work, args.steps, args.warmup, args.batch_dates,
                           args.max_stocks, args.rounds)  # fmt: skip
    raise ValueError(mode)


def _measure(mode: str, raw: Path, work: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--raw", str(raw), "--work", str(work),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-dates",
           str(args.batch_dates), "--max-stocks", str(args.max_stocks), "--rounds",
           str(args.rounds)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _score_seconds(raw: Path, work: Path, onnx: str) -> float:
    cmd = [sys.executable, "-m", "rotation_dl.cli", "score", *_sample_overrides(raw),
           f"paths.output_dir={work}", f"paths.checkpoints={work / 'ck'}",
           f"score.models=[{onnx}]", "score.providers=cpu"]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO,
                   env={**os.environ, "ROTATION_DL_MODEL_KEY": ""})  # fmt: skip
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stocks", type=int, default=5000)
    ap.add_argument("--days", type=int, default=250)
    ap.add_argument("--batch-dates", type=int, default=4)
    ap.add_argument("--max-stocks", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "outputs" / "bench" / "stock.json"))
    ap.add_argument("--child")
    ap.add_argument("--raw")
    ap.add_argument("--work")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, Path(args.raw), Path(args.work), args)))
        return
    base = REPO / "outputs" / "bench" / "stock_work"
    results: dict[str, dict] = {}
    sizes = {"1x": args.days, "2x_days": 2 * args.days}
    for label, days in sizes.items():
        raw = base / f"raw_{args.stocks}x{days}"
        work = base / f"work_{args.stocks}x{days}"
        t0 = time.perf_counter()
        _measure("prepare", raw, work, args)
        print(f"{label}: market, store and industry bars ready ({time.perf_counter() - t0:.0f} "
              "s)", file=sys.stderr)  # fmt: skip
        results[f"panel_{label}"] = _measure("panel", raw, work, args)
        print(f"{label}: panel {results[f'panel_{label}']}", file=sys.stderr)
    raw, work = base / f"raw_{args.stocks}x{args.days}", base / f"work_{args.stocks}x{args.days}"
    train = _measure("train", raw, work, args)
    print(f"train: {train}", file=sys.stderr)
    onnx = _measure("model", raw, work, args)["onnx"]
    score_runs = [_score_seconds(raw, work, onnx) for _ in range(2)]
    print(f"score: {score_runs}", file=sys.stderr)
    p1, p2 = results["panel_1x"], results["panel_2x_days"]
    summary = {
        "device": train["device"],
        "stocks": args.stocks,
        "days": args.days,
        "bars_per_day": 16,
        "panel_build_s": p1["seconds"],
        "panel_peak_rss_mb": p1["peak_rss_mb"],
        "panel_build_s_2x_days": p2["seconds"],
        "panel_peak_rss_mb_2x_days": p2["peak_rss_mb"],
        "rss_ratio_2x_days": p2["peak_rss_mb"] / p1["peak_rss_mb"],
        "seq_per_s": train["seq_per_s"],
        "qlib_style_seq_per_s": train["qlib_style_seq_per_s"],
        "model_only_seq_per_s": train["model_only_seq_per_s"],
        "speedup_vs_qlib_style": train["speedup_vs_qlib_style"],
        "pipeline_overhead": train["pipeline_overhead"],
        "score_5000_seconds": min(score_runs),
        "score_runs_s": score_runs,
        "config": {
            "window": WINDOW,
            "hidden": HIDDEN,
            "layers": LAYERS,
            "batch_dates": args.batch_dates,
            "max_stocks": args.max_stocks,
            "steps": args.steps,
            "rounds": args.rounds,
        },  # fmt: skip
        "train": train,
        "panels": results,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
