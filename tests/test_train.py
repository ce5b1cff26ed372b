"""Training: it learns the planted signal, is deterministic, resumes exactly, stays causal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import REPO, SMALL_TRAIN, feature_spec

from rotation_dl.config import FeatureConfig, LoggerConfig, WalkForwardConfig, build
from rotation_dl.features.normalize import fit_norm_stats
from rotation_dl.features.panel import build_panel
from rotation_dl.industry.aggregate import industry_bars
from rotation_dl.layout import RunLayout
from rotation_dl.models.config import TrainConfig
from rotation_dl.models.gru import GRUConfig, build_net
from rotation_dl.session import A_SHARE
from rotation_dl.stages.train import train_walk_forward
from rotation_dl.synthetic.market import SampleConfig, make_sample_market
from rotation_dl.training.datamodule import PanelDataModule
from rotation_dl.training.walkforward import walk_forward_folds

LEARN = SampleConfig(n_industries=16, n_stocks=160, n_days=240, seed=5)
NET = {"arch": "flat", "hidden": 32, "layers": 1, "dropout": 0.0, "day_hidden": None}
TRAIN = {
    "batch_dates": 8,
    "max_epochs": 10,
    "patience": 4,
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "scheduler": "cosine",
    "accelerator": "cpu",
    "enable_progress_bar": False,
}
WF = {"min_train_days": 120, "val_days": 20, "retrain_every": 40, "gap": 5}


@pytest.fixture(scope="module")
def learn_bars(tmp_path_factory):
    m = make_sample_market(LEARN)
    ib = industry_bars(m.bars.lazy(), m.classification, adjustment=m.adj_factors).collect()
    path = tmp_path_factory.mktemp("learn") / "industry_bars.parquet"
    ib.write_parquet(path)
    return path


def layout_in(out) -> RunLayout:
    """A run layout with every root under `out` (run/, ckpt/, cache/)."""
    o = Path(out)
    return RunLayout(
        o / "run", o / "store", o / "ckpt", o / "cache", o / "ib.parquet",
        o / "onnx", o / "score", o / "report", o / "sweeps",
    )  # fmt: skip


def _train(path, out, *, net=NET, train=TRAIN, seeds=(0,), resume=False, window=5, **kw):
    return train_walk_forward(
        path,
        layout_in(out),
        features=FeatureConfig(window=window),
        net=build(GRUConfig, net),
        trainer=build(TrainConfig, train),
        walkforward=build(WalkForwardConfig, WF),
        seeds=list(seeds),
        session=A_SHARE,
        resume=resume,
        logger=LoggerConfig(kind=kw.pop("logger", "none")),
        run="t",
        **kw,
    )


@pytest.mark.slow
def test_learns_planted_signal_and_not_shuffled_labels(learn_bars, tmp_path):
    real = _train(learn_bars, tmp_path / "real").metrics["oos_rank_ic"]
    assert real["mean"] >= 0.05 and real["t_stat"] > 2.0, real
    shuffled = _train(
        learn_bars, tmp_path / "shuf", train={**TRAIN, "shuffle_labels": True}
    ).metrics["oos_rank_ic"]
    assert abs(shuffled["mean"]) < 0.05 and abs(shuffled["t_stat"]) < 2.0, shuffled


@pytest.mark.slow
def test_hierarchical_learns(learn_bars, tmp_path):
    net = {**NET, "arch": "hierarchical", "day_hidden": 16}
    r = _train(learn_bars, tmp_path / "h", net=net).metrics["oos_rank_ic"]
    assert r["mean"] >= 0.05, r


def test_deterministic_and_weights_only_checkpoints(learn_bars, tmp_path):
    quick = {**TRAIN, "max_epochs": 2}
    a = _train(learn_bars, tmp_path / "a", train=quick)
    b = _train(learn_bars, tmp_path / "b", train=quick)
    fa, fb = (pl.read_parquet(o.factor_panel) for o in (a, b))
    assert fa.drop("model_version").equals(fb.drop("model_version"))
    assert set(fa.columns) == {"date", "industry", "score", "fold", "model_version"}
    ckpt = tmp_path / "a" / "ckpt" / "fold_00" / "seed_0" / "best.ckpt"
    state = torch.load(ckpt, weights_only=True)
    meta = state["hyper_parameters"]["meta"]
    assert meta["feature_spec"]["features"][0] == "open_rel"
    assert len(meta["norm"]["mean"]) == len(meta["feature_spec"]["features"])
    assert meta["data_hash"] and meta["train_range"][0] < meta["train_range"][1]


def test_seed_ensemble_averages(learn_bars, tmp_path):
    quick = {**TRAIN, "max_epochs": 1}
    out = _train(learn_bars, tmp_path, train=quick, seeds=(0, 1))
    ens = pl.read_parquet(out.factor_panel)
    parts = [
        pl.read_parquet(tmp_path / "ckpt" / "fold_00" / f"seed_{s}" / "scores.parquet")
        for s in (0, 1)
    ]
    both = parts[0].join(parts[1], on=["date", "industry"], suffix="_1")
    mean = both.select("date", "industry", ((pl.col("score") + pl.col("score_1")) / 2).alias("m"))
    j = ens.join(mean, on=["date", "industry"])
    assert j.height == both.height
    np.testing.assert_allclose(j["score"].to_numpy(), j["m"].to_numpy())


KILL_SCRIPT = """
import os, signal, sys, json
import lightning as L
from pathlib import Path
from rotation_dl.config import FeatureConfig, LoggerConfig, WalkForwardConfig, build
from rotation_dl.layout import RunLayout
from rotation_dl.models.config import GRUConfig, TrainConfig
from rotation_dl.session import A_SHARE
from rotation_dl.stages.train import train_walk_forward

# kill -9 at a point inside fold 1: a training batch's end, or a validation's end (this runs
# before ModelCheckpoint's, which Lightning orders last: the kill lands between validation and
# the checkpoint)
class KillAt(L.Callback):
    def __init__(self, hook, epoch, batch):
        self.hook, self.epoch, self.batch = hook, epoch, batch
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (self.hook, trainer.current_epoch, batch_idx) == ("batch", self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGKILL)
    def on_validation_end(self, trainer, pl_module):
        if self.hook == "validation" and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)
    def on_train_end(self, trainer, pl_module):  # the fold's training done, done.json not yet
        if self.hook == "train_end":
            os.kill(os.getpid(), signal.SIGKILL)

args = json.loads(sys.argv[1])
o = Path(args["out"])
kill = args["kill"]
cbs = (lambda f, s: [KillAt(*kill)] if f == 1 else []) if kill else None
train_walk_forward(
    Path(args["industry_bars"]),
    RunLayout(o / "run", o / "store", o / "ckpt", o / "cache", o / "ib.parquet",
              o / "onnx", o / "score", o / "report", o / "sweeps"),
    features=FeatureConfig(window=5),
    net=build(GRUConfig, args["net"]),
    trainer=build(TrainConfig, args["train"]),
    walkforward=build(WalkForwardConfig, args["walkforward"]),
    seeds=[0],
    session=A_SHARE,
    resume=args["resume"],
    logger=LoggerConfig(kind="none"),
    run="t",
    extra_callbacks=cbs,
)
"""


RESUME_TRAIN = {**TRAIN, "max_epochs": 4, "patience": 10}
RESUME_NET = {**NET, "dropout": 0.2}  # random draws in every step: a resume must replay them


def _kill_script_run(script, learn_bars, out, resume, kill):
    args = {
        "industry_bars": str(learn_bars),
        "out": str(out),
        "net": RESUME_NET,
        "train": RESUME_TRAIN,
        "walkforward": WF,
        "resume": resume,
        "kill": kill,
    }
    return subprocess.run(
        [sys.executable, str(script), json.dumps(args)], cwd=REPO, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def straight_run(learn_bars, tmp_path_factory):
    """The uninterrupted run every killed-and-resumed run must reproduce bit for bit."""
    tmp = tmp_path_factory.mktemp("straight")
    script = tmp / "train_script.py"
    script.write_text(KILL_SCRIPT)
    done = _kill_script_run(script, learn_bars, tmp / "s", False, None)
    assert done.returncode == 0, done.stderr[-2000:]
    return script, tmp / "s"


def _fold_state(out: Path, fold: int) -> tuple[dict, dict, dict]:
    d = out / "ckpt" / f"fold_{fold:02d}" / "seed_0"
    best = torch.load(d / "best.ckpt", weights_only=True)
    last = torch.load(d / "last.ckpt", weights_only=True)
    return best, last, json.loads((d / "done.json").read_text())


def _assert_same_checkpoint(a: dict, b: dict) -> None:
    """Weights, AdamW moments, epoch and step equal bit for bit."""
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    for name, tensor in b["state_dict"].items():
        assert torch.equal(a["state_dict"][name], tensor), name
    moments = zip(a["optimizer_states"][0]["state"].values(),
                  b["optimizer_states"][0]["state"].values(), strict=True)  # fmt: skip
    for sa, sb in moments:
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]), "exp_avg"
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"]), "exp_avg_sq"


@pytest.mark.parametrize(
    "kill",
    [
        pytest.param(["batch", 0, 2], id="first-epoch"),  # before any last.ckpt of the fold
        pytest.param(["batch", 2, 3], id="mid-epoch"),
        pytest.param(["validation", 1, 0], id="between-validation-and-checkpoint"),
        pytest.param(["train_end", 3, 0], id="after-the-last-epoch"),
    ],
)
def test_resume_after_kill_inside_a_fold_is_bit_identical(
    learn_bars, straight_run, tmp_path, kill
):
    script, straight = straight_run
    killed = _kill_script_run(script, learn_bars, tmp_path / "k", False, kill)
    assert killed.returncode == -9, killed.stderr[-2000:]
    fold1 = tmp_path / "k" / "ckpt" / "fold_01" / "seed_0"
    assert (fold1 / "last.ckpt").exists() == (kill[1] > 0)
    assert not (fold1 / "done.json").exists()
    assert (tmp_path / "k" / "ckpt" / "fold_00" / "seed_0" / "done.json").exists()
    assert not (tmp_path / "k" / "run" / "factor_panel.parquet").exists()
    resumed = _kill_script_run(script, learn_bars, tmp_path / "k", True, None)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # the factor panel, bit for bit
    a = pl.read_parquet(tmp_path / "k" / "run" / "factor_panel.parquet").drop("model_version")
    b = pl.read_parquet(straight / "run" / "factor_panel.parquet").drop("model_version")
    assert a.equals(b)
    # the interrupted fold's checkpoints (the best one and the last epoch's) and metrics
    (ba, la, ia), (bb, lb, ib) = _fold_state(tmp_path / "k", 1), _fold_state(straight, 1)
    _assert_same_checkpoint(ba, bb)
    _assert_same_checkpoint(la, lb)
    assert ia["best_val_rank_ic"] == ib["best_val_rank_ic"] and ia["epochs"] == ib["epochs"]
    ma = json.loads((tmp_path / "k" / "run" / "train_metrics.json").read_text())
    mb = json.loads((straight / "run" / "train_metrics.json").read_text())
    assert ma["oos_rank_ic"] == mb["oos_rank_ic"]


def test_early_stopping_decision_survives_a_resume():
    """A fold whose last.ckpt records an exhausted patience stops at once when resumed."""
    from types import SimpleNamespace

    from rotation_dl.training.loop import ResumableEarlyStopping

    stop = ResumableEarlyStopping(monitor="val/rank_ic", mode="max", patience=2)
    stop.load_state_dict({"wait_count": 2, "stopped_epoch": 0, "best_score": torch.tensor(0.1),
                          "patience": 2})  # fmt: skip
    trainer = SimpleNamespace(current_epoch=5, min_epochs=1, should_stop=False)
    stop.on_train_start(trainer, None)
    assert trainer.should_stop
    stop.load_state_dict({"wait_count": 1, "stopped_epoch": 0, "best_score": torch.tensor(0.1),
                          "patience": 2})  # fmt: skip
    trainer.should_stop = False
    stop.on_train_start(trainer, None)
    assert not trainer.should_stop


def test_per_step_seed_mixes_every_input():
    from rotation_dl.models.module import step_seed

    seeds = {step_seed(s, e, b) for s in range(3) for e in range(3) for b in range(50)}
    assert len(seeds) == 3 * 3 * 50 and all(0 <= x < 2**63 for x in seeds)
    assert step_seed(1, 2, 3) == step_seed(1, 2, 3)


def test_no_look_ahead(tiny_market):
    """Perturb every raw bar after day t: features, norm stats and scores at <= t unchanged."""
    bars = tiny_market.bars.filter(pl.col("close") > 0)
    days = bars["ts"].dt.date().unique().sort()
    t = 20
    later = pl.col("ts").dt.date() > days[t]
    noisy = bars.with_columns(
        [
            pl.when(later).then(pl.col(c) * 1.5).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close", "volume", "amount")
        ]
    )
    spec = feature_spec(horizon=3)
    panels = [
        build_panel(
            industry_bars(
                b.lazy(), tiny_market.classification, adjustment=tiny_market.adj_factors
            ).collect(),
            spec,
        )
        for b in (bars, noisy)
    ]
    pa, pb = panels
    np.testing.assert_allclose(pa.x[: t + 1], pb.x[: t + 1], rtol=1e-9, atol=1e-12)
    assert not np.allclose(np.nan_to_num(pa.x[t + 1 :]), np.nan_to_num(pb.x[t + 1 :]))
    np.testing.assert_allclose(pa.label[: t - 3 + 1], pb.label[: t - 3 + 1])
    fold = walk_forward_folds(
        len(pa.dates), warmup=4, min_train_days=8, val_days=3, retrain_every=5, gap=3
    )[0]
    assert fold.train[1] <= t
    sa, sb = (
        fit_norm_stats(p.x, np.arange(*fold.train), p.active, spec.features, p.dates)
        for p in panels
    )
    np.testing.assert_allclose(sa.mean, sb.mean, rtol=1e-9)
    np.testing.assert_allclose(sa.std, sb.std, rtol=1e-9)
    torch.manual_seed(0)
    net = build_net(GRUConfig(n_features=len(spec.features), hidden=8, layers=1)).eval()
    scores = []
    for p in panels:
        dm = PanelDataModule(p, fold, window=4, norm=sa)
        dm.setup()
        with torch.no_grad():
            scores.append(net(dm.gather(torch.arange(3, t + 1))["x"]).numpy())
    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-6, atol=1e-7)


DDP = [
    "data.sample.n_industries=6",
    "data.sample.n_stocks=48",
    "data.sample.n_days=100",
    "features.window=4",
    "model.hidden=8",
    "model.layers=1",
    "model.dropout=0.0",
    "trainer.max_epochs=3",
    "trainer.batch_dates=64",
    "trainer.patience=10",
    "walkforward.min_train_days=40",
    "walkforward.val_days=10",
    "walkforward.retrain_every=20",
    "walkforward.max_folds=2",
    "trainer.enable_progress_bar=false",
    "logger=none",
]


@pytest.mark.slow
def test_ddp_two_process_gloo_matches_single_process(tmp_path):
    """A 2-process DDP fit on CPU (gloo) gives the single-process factor panel and metrics.

    Batches hold every training date, so each step's gradient is the same full-batch mean in
    both runs (DDP averages the two ranks' halves); tolerance 1e-4 on scores, 1e-3 on the
    validation rank IC (float reduction order differs).
    """
    shared = [
        f"paths.store={tmp_path / 'store'}",
        f"paths.industry_bars={tmp_path / 'ib.parquet'}",
    ]

    def run(name, *extra):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "rotation_dl.cli",
                "train",
                *DDP,
                *shared,
                *extra,
                f"paths.output_dir={tmp_path / name}",
                f"paths.checkpoints={tmp_path / f'ck_{name}'}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    run("single")
    ddp = run("ddp", "trainer=ddp_cpu")
    assert ddp.stderr.count("fold 1/2 seed 0") == 2, "two ranks ran"
    assert ddp.stdout.count("train: ") == 1, "only rank zero reports"
    a = pl.read_parquet(tmp_path / "single" / "factor_panel.parquet").sort("date", "industry")
    b = pl.read_parquet(tmp_path / "ddp" / "factor_panel.parquet").sort("date", "industry")
    assert a.select("date", "industry").equals(b.select("date", "industry"))
    np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), atol=1e-4)
    ma, mb = (
        json.loads((tmp_path / n / "train_metrics.json").read_text()) for n in ("single", "ddp")
    )
    assert abs(ma["mean_val_rank_ic"] - mb["mean_val_rank_ic"]) <= 1e-3
    assert not list((tmp_path / "ddp").rglob("*.tmp"))


def test_seed_rank_ics_reports_each_seed_and_their_spread():
    """Per-seed OOS rank IC: seed 0 ranks perfectly (+1), seed 1 inversely (-1) on both dates;
    mean 0, std sqrt(2); a seed without any labelled date is NaN and left out of the spread."""
    from datetime import date

    from rotation_dl.stages.train import seed_rank_ics

    days = [date(2025, 1, 2), date(2025, 1, 3)]
    inds = ["A", "B", "C", "D"]
    labels = pl.DataFrame(
        {
            "date": [d for d in days for _ in inds],
            "industry": inds * 2,
            "fwd_excess": [0.01, 0.02, 0.03, 0.04] * 2,
        }
    )
    rows = []
    for seed, sign in ((0, 1.0), (1, -1.0)):
        for d in days:
            rows += [(d, i, seed, sign * k) for k, i in enumerate(inds)]
    rows += [(date(2030, 1, 2), i, 2, 1.0) for i in inds]  # seed 2: no labelled date
    scores = pl.DataFrame(rows, schema=["date", "industry", "seed", "score"], orient="row")
    out = seed_rank_ics(scores, labels)
    assert out["per_seed"]["0"] == pytest.approx(1.0) and out["per_seed"]["1"] == pytest.approx(
        -1.0
    )
    assert np.isnan(out["per_seed"]["2"])
    assert out["n_seeds"] == 2 and out["mean"] == pytest.approx(0.0)
    assert out["std"] == pytest.approx(np.sqrt(2.0))


def test_a_second_train_on_the_same_output_folder_is_refused_in_one_line(tmp_path, capsys):
    """Two `train`s writing one output folder would interleave its logs and metrics: while one
    holds the run lock, another stops at once with RunLockedError (exit 2, one line), and a
    first run that fails leaves no folder behind."""
    from rotation_dl.cli import main
    from rotation_dl.stages.train import RUN_LOCK, run_lock

    out = tmp_path / "run"
    with run_lock(out):
        assert main(["train", f"paths.output_dir={out}", "logger=none"]) == 2
        assert (out / RUN_LOCK).exists()  # the holder's lock is untouched
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another train (pid" in err[0] and str(out) in err[0], err

    fresh = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), run_lock(fresh):
        raise RuntimeError("the run failed")
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_sigterm_stops_train_at_once_and_resume_finishes(tmp_path, signame):
    """SIGTERM (a scheduler's stop) or SIGINT (Ctrl-C) during training: one line, exit 128 +
    the signal, finished epochs' checkpoints kept, no fold recorded as done; the same command
    with resume=true finishes the run. (Left to Lightning, Ctrl-C cut the fold in progress short,
    recorded it as done and went on, exit 0.)"""
    import signal
    import time

    sig = getattr(signal, signame)

    out, ck = tmp_path / "o", tmp_path / "ck"
    args = [
        sys.executable, "-m", "rotation_dl.cli", "train",
        f"paths.output_dir={out}", f"paths.checkpoints={ck}",
        *[a for a in SMALL_TRAIN if not a.startswith("trainer.max_epochs")],
        "trainer.max_epochs=40", "trainer.patience=40", "walkforward.max_folds=1",
    ]  # fmt: skip
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(ck.glob("fold_*/seed_0/last.ckpt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"TrainingStopped: stopped by {signame}" in errors[0]
    assert "resume=true" in errors[0]
    assert list(ck.glob("fold_*/seed_0/last.ckpt")) and not (out / "factor_panel.parquet").exists()
    assert not list(ck.glob("fold_*/seed_0/done.json"))
    done = subprocess.run(
        [*args[:-3], "trainer.max_epochs=3", "trainer.patience=3", "walkforward.max_folds=1",
         "resume=true"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "factor_panel.parquet").exists()
    assert "CPU threads:" in done.stdout and "ETA" not in done.stdout.split("fold 1/1")[-1]


PAYLOAD = """
import os, pickle, sys
class Boom:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
with open(sys.argv[1], "wb") as f:
    pickle.dump({"state_dict": Boom()}, f)
"""


@pytest.mark.slow
def test_a_pickle_planted_as_last_ckpt_is_refused_by_resume_in_one_line(tmp_path):
    """resume=true reads last.ckpt with the weights-only loader first: a planted pickle never
    runs, and the user gets export's one-line CheckpointError, not Lightning's traceback that
    advises weights_only=False."""
    out, ck = tmp_path / "o", tmp_path / "ck"
    args = [sys.executable, "-m", "rotation_dl.cli", "train", f"paths.output_dir={out}",
            f"paths.checkpoints={ck}", *SMALL_TRAIN, "walkforward.max_folds=1"]  # fmt: skip
    first = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    fold = next(ck.glob("fold_*/seed_0"))
    (fold / "done.json").unlink()  # the fold looks interrupted
    pwned = tmp_path / "pwned"
    subprocess.run([sys.executable, "-c", PAYLOAD, str(fold / "last.ckpt"), str(pwned)],
                   check=True)  # fmt: skip
    again = subprocess.run([*args, "resume=true"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    errors = [line for line in again.stderr.splitlines() if ": error: " in line]
    assert again.returncode == 2 and len(errors) == 1, again.stderr[-2000:]
    assert "CheckpointError" in errors[0] and "last.ckpt" in errors[0]
    assert "weights_only=False" not in again.stderr and not pwned.exists()
