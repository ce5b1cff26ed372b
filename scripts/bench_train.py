"""Benchmark: training throughput of the rotation_dl pipeline vs a Qlib-style loop vs the model.

Writes outputs/bench/train.json. Same network, same panel, same batch size (whole dates x all
industries = rows per step), measured side by side in one run:

* pipeline     - PanelDataModule (index gathers from one panel tensor) + RotationModule through a
                 Lightning Trainer, i.e. what `rotation-dl train` runs;
* qlib_style   - windows pre-flattened into a NumPy array, each batch copied with
                 torch.from_numpy(...).float().to(device) in a plain Python loop (as Qlib's GRU);
* model_only   - forward/backward/step on one pre-loaded batch tensor: the floor.

Keys: device, samples_per_s (pipeline, samples = date x industry cells), speedup_vs_qlib_style,
pipeline_overhead (pipeline step time / model-only step time - 1), plus every mode's figures
and, on CUDA, the same for bf16 autocast.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from rotation_dl.features.normalize import normalise
from rotation_dl.features.panel import build_panel
from rotation_dl.features.spec import FeatureSpec
from rotation_dl.industry.aggregate import industry_bars
from rotation_dl.models.gru import GRUConfig, build_net
from rotation_dl.models.losses import mse_loss
from rotation_dl.models.module import RotationModule
from rotation_dl.session import A_SHARE
from rotation_dl.synthetic.market import SampleConfig, make_sample_market
from rotation_dl.training.datamodule import PanelDataModule
from rotation_dl.training.walkforward import walk_forward_folds

REPO = Path(__file__).resolve().parents[1]


class StepTimer(L.Callback):
    """Wall time of training steps after `warmup` steps (synchronised on CUDA)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0, self.t1, self.steps = warmup, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.t0 is None:
            _sync()
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.t0 is not None:
            self.steps += 1
            _sync()
            self.t1 = time.perf_counter()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_pipeline(panel, fold, net_cfg, window, batch_dates, steps, warmup, device, precision):
    dm = PanelDataModule(panel, fold, window, batch_dates, seed=0, on_device=device != "cpu")
    module = RotationModule(net=net_cfg.to_dict(), loss={"name": "mse"}, lr=1e-3, scheduler=None)
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        max_steps=steps + warmup,
        accelerator="gpu" if device != "cpu" else "cpu",
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        callbacks=[timer],
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        max_epochs=10_000,
    )
    trainer.fit(module, dm)
    return (timer.t1 - timer.t0) / timer.steps


def bench_qlib_style(panel, fold, net_cfg, window, batch_dates, steps, warmup, device, autocast):
    """Qlib's pattern: rows = (date, industry), flattened windows in NumPy, copy per batch."""
    dm = PanelDataModule(panel, fold, window, batch_dates)
    dm.setup()
    z = normalise(np.asarray(panel.x), dm.norm)  # [D, N, P, F]
    days = np.array(dm.days["train"])
    N, P, F = z.shape[1:]
    rows = np.stack([z[d - window + 1 : d + 1].transpose(1, 0, 2, 3) for d in days])
    x_values = rows.reshape(len(days) * N, window * P * F)  # one row per (date, industry)
    y_values = np.nan_to_num(np.asarray(panel.label)[days].reshape(-1))
    net = build_net(net_cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    bs = batch_dates * N
    rng = np.random.default_rng(0)
    t0, n = None, 0
    while n < steps + warmup:
        indices = rng.permutation(len(x_values))
        for i in range(0, len(indices), bs):
            if len(indices) - i < bs:
                break
            if n == warmup:
                _sync()
                t0 = time.perf_counter()
            feature = torch.from_numpy(x_values[indices[i : i + bs]]).float().to(device)
            label = torch.from_numpy(y_values[indices[i : i + bs]]).float().to(device)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=autocast):
                pred = net(feature.reshape(bs, 1, window, P, F)).reshape(-1).float()
            loss = torch.mean((pred - label) ** 2)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_value_(net.parameters(), 3.0)
            opt.step()
            n += 1
            if n == steps + warmup:
                break
    _sync()
    return (time.perf_counter() - t0) / steps


def bench_model_only(panel, net_cfg, window, batch_dates, steps, warmup, device, autocast):
    N, P, F = panel.x.shape[1:]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_dates, N, window, P, F, generator=g).to(device)
    y = torch.randn(batch_dates, N, generator=g).to(device)
    mask = torch.ones(batch_dates, N, dtype=torch.bool, device=device)
    net = build_net(net_cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for k in range(steps + warmup):
        if k == warmup:
            _sync()
            t0 = time.perf_counter()
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=autocast):
            pred = net(x).float()
        loss = mse_loss(pred, y, mask)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
    _sync()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--industries", type=int, default=31)
    ap.add_argument("--days", type=int, default=250)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--batch-dates", type=int, default=16)
    ap.add_argument("--arch", default="flat")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "outputs" / "bench" / "train.json"))
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    m = make_sample_market(
        SampleConfig(n_industries=args.industries, n_stocks=10 * args.industries, n_days=args.days)
    )
    ib = industry_bars(m.bars.lazy(), m.classification, adjustment=m.adj_factors).collect()
    panel = build_panel(ib, FeatureSpec.build(None, 15, 5, 20, 1, A_SHARE))
    fold = walk_forward_folds(
        len(panel.dates),
        warmup=args.window + 5,
        min_train_days=120,
        val_days=20,
        retrain_every=20,
        gap=5,
    )[0]
    net_cfg = GRUConfig(
        n_features=panel.n_features,
        arch=args.arch,
        hidden=args.hidden,
        layers=args.layers,
        dropout=0.1,
    )
    common = (panel, fold, net_cfg, args.window, args.batch_dates, args.steps, args.warmup)
    per_step = args.batch_dates * args.industries
    results = {}
    variants = [("fp32", "32-true", False)]
    if device == "cuda":
        variants.append(("bf16", "bf16-mixed", True))
    for name, precision, autocast in variants:
        # two interleaved rounds; each mode keeps its best round (the first pays warm-up)
        t_pipe = t_qlib = t_model = float("inf")
        for _ in range(args.rounds):
            t_model = min(
                t_model,
                bench_model_only(
                    panel,
                    net_cfg,
                    args.window,
                    args.batch_dates,
                    args.steps,
                    args.warmup,
                    device,
                    autocast,
                ),
            )
            t_qlib = min(t_qlib, bench_qlib_style(*common, device, autocast))
            t_pipe = min(t_pipe, bench_pipeline(*common, device, precision))
        results[name] = {
            "pipeline_step_s": t_pipe,
            "qlib_style_step_s": t_qlib,
            "model_only_step_s": t_model,
            "samples_per_s": per_step / t_pipe,
            "qlib_style_samples_per_s": per_step / t_qlib,
            "model_only_samples_per_s": per_step / t_model,
            "speedup_vs_qlib_style": t_qlib / t_pipe,
            "pipeline_overhead": t_pipe / t_model - 1,
        }
    head = results["fp32"]
    summary = {
        "device": torch.cuda.get_device_name(0)
        if device == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "samples_per_s": head["samples_per_s"],
        "speedup_vs_qlib_style": head["speedup_vs_qlib_style"],
        "pipeline_overhead": head["pipeline_overhead"],
        "config": {k: v for k, v in vars(args).items() if k != "out"}
        | {
            "bars_per_day": panel.bars_per_day,
            "features": panel.n_features,
            "samples_per_step": per_step,
        },
        "precisions": results,
        "versions": {
            "torch": torch.__version__,
            "lightning": L.__version__,
            "python": platform.python_version(),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
