"""Optuna sweeps: failed trials do not stop the sweep; a killed sweep resumes where it stopped."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import polars as pl
import pytest
from conftest import REPO

TINY = [
    "data.sample.n_industries=4",
    "data.sample.n_stocks=24",
    "data.sample.n_days=80",
    "walkforward.min_train_days=30",
    "walkforward.val_days=8",
    "walkforward.retrain_every=20",
    "walkforward.max_folds=1",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "hparams_search.sampler_startup_trials=2",
]
SPACE = [
    "~hparams_search.params",
    "+hparams_search.params.features.window={type:categorical,choices:[3,4]}",
    "+hparams_search.params.trainer.lr={type:float,low:0.001,high:0.01,log:true}",
]


STUDY = "demo_gru_optuna"  # the default study is named after the run (run=demo)


def _sweep(tmp_path, extra, n_trials, **kw):
    args = [
        sys.executable,
        "-m",
        "rotation_dl.cli",
        "train",
        "-m",
        "hparams_search=gru_optuna",
        f"paths.output_dir={tmp_path / 'out'}",
        f"paths.checkpoints={tmp_path / 'ck'}",
        f"paths.sweeps={tmp_path / 'sweeps'}",
        f"hparams_search.n_trials={n_trials}",
        f"hparams_search.best_config_dir={tmp_path / 'best'}",
        *TINY,
        *SPACE,
        *extra,
    ]
    return (
        subprocess.run(args, cwd=REPO, capture_output=True, text=True, **kw)
        if not kw.get("background")
        else subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    )


def _study(tmp_path):
    return optuna.load_study(
        study_name=STUDY, storage=f"sqlite:///{tmp_path / 'sweeps' / f'{STUDY}.db'}"
    )


def test_failing_trial_is_recorded_and_sweep_goes_on(tmp_path):
    bad_space = ["+hparams_search.params.model.hidden={type:categorical,choices:[8,-1]}"]
    proc = _sweep(tmp_path, bad_space, 4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = [t.state for t in _study(tmp_path).trials]
    assert len(states) == 4
    assert optuna.trial.TrialState.COMPLETE in states
    if optuna.trial.TrialState.FAIL not in states:  # TPE may not have picked -1: force it
        proc = _sweep(
            tmp_path,
            [
                "~hparams_search.params",
                "+hparams_search.params.model.hidden={type:categorical,choices:[-1]}",
            ],
            5,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        states = [t.state for t in _study(tmp_path).trials]
    assert optuna.trial.TrialState.FAIL in states
    table = pl.read_csv(tmp_path / "sweeps" / STUDY / "trials.csv")
    assert set(table.columns) >= {"number", "state", "value", "duration_s", "seed"}
    best = (tmp_path / "best" / f"{STUDY}_best.yaml").read_text()
    assert best.startswith("# @package _global_") and "features:" in best


def test_sweep_where_every_trial_fails_exits_2_with_the_first_error(tmp_path):
    only_bad = [
        "~hparams_search.params",
        "+hparams_search.params.model.hidden={type:categorical,choices:[-1]}",
    ]
    proc = _sweep(tmp_path, only_bad, 2)
    assert proc.returncode == 2, proc.stdout[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("rotation-dl train: error: SweepFailedError: all 2 trial(s)")
    assert "ConfigError: model.hidden must be at least 1, got -1" in err
    states = {t.state for t in _study(tmp_path).trials}
    assert states == {optuna.trial.TrialState.FAIL}


@pytest.mark.slow
def test_killed_sweep_resumes(tmp_path):
    """kill -9 while trial 2 runs: the re-run marks it FAIL at once (its worker was a dead
    process on this host), runs it again with its parameters and seed, and finishes the rest;
    the completed trials are kept and nothing is counted twice."""
    proc = _sweep(tmp_path, [], 4, background=True)
    db = tmp_path / "sweeps" / f"{STUDY}.db"
    deadline = time.time() + 300
    done = running = 0
    while time.time() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    rows = dict(con.execute("select state, count(*) from trials group by state"))
                    running = con.execute(  # a running trial that has its seed: it trains
                        "select count(*) from trials t join trial_user_attributes a "
                        "on a.trial_id = t.trial_id where t.state = 'RUNNING' and a.key = 'seed'"
                    ).fetchone()[0]
                done = rows.get("COMPLETE", 0)
            except sqlite3.Error:
                done = running = 0
        if done >= 2 and running:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert done >= 2 and running, "the sweep made no progress before the kill"
    study = _study(tmp_path)
    before = {
        t.number: t.params for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
    }
    killed = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    resumed = _sweep(tmp_path, [], 4)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = _study(tmp_path).trials
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(numbers))), "trial numbers continue without gaps"
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and len(trials) == 4 + len(killed)
    for n, params in before.items():  # finished trials are kept, not re-run
        assert trials[n].params == params and trials[n].state == optuna.trial.TrialState.COMPLETE
    for k in killed:
        assert trials[k.number].state == optuna.trial.TrialState.FAIL
        (rerun,) = [t for t in trials if t.user_attrs.get("rerun_of") == k.number]
        assert rerun.params == k.params and rerun.user_attrs["seed"] == k.user_attrs["seed"]
    assert len({t.user_attrs["seed"] for t in complete}) == 4


@pytest.mark.slow
def test_parallel_workers_share_one_study(tmp_path):
    longer = ["data.sample.n_days=110", "walkforward.max_folds=null"]  # ~50 OOS dates per trial
    proc = _sweep(tmp_path, ["launcher=local", "launcher.workers=2", *longer], 4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _study(tmp_path).trials
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(len(numbers))) and len(numbers) >= 4  # no duplicate numbers
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
    # choosing the best is accounted for: every complete trial's OOS IC series, the deflated
    # Sharpe ratio of the chosen one and the PBO
    import json

    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    oos = pl.read_parquet(tmp_path / "sweeps" / STUDY / "oos_ic.parquet")
    assert set(oos.columns) == {"date"} | {f"trial_{t.number:03d}" for t in complete}
    sel = json.loads((tmp_path / "sweeps" / STUDY / "selection.json").read_text())
    best = max(complete, key=lambda t: t.value)
    assert sel["selected"] == f"trial_{best.number:03d}" and sel["trials"] == len(complete)
    assert 0 <= sel["deflated_sharpe"] <= 1 and 0 <= sel["pbo"] <= 1
    assert sel["periods"] == oos.height
    assert "deflated Sharpe ratio" in proc.stdout and "PBO" in proc.stdout


def test_each_run_has_its_own_default_study():
    """A new run never inherits an old run's trials: the default study and its database are
    named after the run."""
    from rotation_dl.config import compose_run

    a = compose_run(["hparams_search=gru_optuna", "run=a"]).hparams_search
    b = compose_run(["hparams_search=gru_optuna", "run=b"]).hparams_search
    assert (a.study_name, b.study_name) == ("a_gru_optuna", "b_gru_optuna")
    assert a.storage != b.storage and a.storage.endswith("a_gru_optuna.db")


def test_a_trial_killed_before_its_worker_tagged_it_is_failed_after_the_grace_period(tmp_path):
    from rotation_dl.models import search

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = search.open_study("s", url, "maximize", 0, 1, 1, 1, heartbeat_s=1, grace_s=2)
    trial = study.ask()  # RUNNING, no worker tag, no heartbeat: its worker died at once
    trial.suggest_float("x", 0.0, 1.0)
    assert search.fail_dead_trials(study) == 0  # too young to tell
    time.sleep(2.5)
    assert search.fail_dead_trials(study) == 1
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert search.progress(study.get_trials(deepcopy=False)) == (0, 0, 1)
