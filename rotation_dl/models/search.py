"""Hyper-parameter sweeps with Optuna over Hydra-composed runs, robust to crashes.

Why not the Hydra Optuna sweeper plugin: it pins Optuna 2.10, offers no pruning, and a killed
sweep cannot resume its study. This driver uses a maintained Optuna directly:

* the study lives in an RDB storage (SQLite by default, PostgreSQL for a team), so re-running the
  same command resumes it. Each running trial beats a heartbeat; a trial whose worker died
  (kill -9, a lost node) is marked FAIL once its heartbeat is `grace_s` old, or at once when its
  worker was a dead process on this host, and is re-run with the same parameters and seed (a
  WAITING copy, `retries` times at most). `n_trials` counts trials, not attempts: a failed
  attempt that was re-run is not counted, so no trial counts twice;
* a trial that raises or returns NaN is recorded FAIL and the sweep goes on;
* hopeless trials are pruned on their validation rank IC by a Lightning callback;
* each trial's config overrides and seed are stored on the trial, so any trial can be re-run;
* `workers > 1` starts that many worker processes sharing the storage (one machine), and the
  same command run as SLURM jobs against a shared RDB fans out over a cluster.

The driver takes a `run_trial(overrides, callbacks) -> float` function from the sweep stage, so it
never imports Hydra itself.
"""

from __future__ import annotations

import copy
import datetime
import logging
import math
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import polars as pl
import sqlalchemy.exc
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from rotation_dl.artifacts import atomic_write_bytes, process_alive, write_table
from rotation_dl.errors import ConfigError

log = logging.getLogger(__name__)
# heartbeats and re-runs of dead trials are marked experimental in Optuna; they are relied on here
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

RunTrial = Callable[[list[str], Callable[[int, int], Sequence[Any]]], float]


class PruneOnValRankIC(L.Callback):
    """Reports `val/rank_ic` to the trial after every validation epoch and prunes when told.

    Steps are fold * 1000 + epoch, so reports stay monotonic across walk-forward folds.
    """

    def __init__(self, trial: optuna.Trial, fold: int, monitor: str = "val/rank_ic") -> None:
        self.trial, self.fold, self.monitor = trial, fold, monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.sanity_checking:
            return
        step = self.fold * 1000 + trainer.current_epoch
        self.trial.report(float(value), step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at fold {self.fold} epoch {trainer.current_epoch}")


def flatten_space(space: Mapping[str, Any], prefix: str = "") -> dict[str, Mapping[str, Any]]:
    """{"model": {"hidden": {...}}} or {"model.hidden": {...}} -> {"model.hidden": {...}}."""
    out: dict[str, Mapping[str, Any]] = {}
    for key, value in space.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and "type" not in value:
            out.update(flatten_space(value, f"{name}."))
        else:
            out[name] = value
    return out


def suggest(trial: optuna.Trial, space: Mapping[str, Any]) -> dict[str, Any]:
    """Sample one value per config key from its search space."""
    out = {}
    for key, spec in flatten_space(space).items():
        kind = spec.get("type")
        if kind == "float":
            out[key] = trial.suggest_float(
                key, spec["low"], spec["high"], log=bool(spec.get("log", False))
            )
        elif kind == "int":
            out[key] = trial.suggest_int(
                key, spec["low"], spec["high"], log=bool(spec.get("log", False))
            )
        elif kind == "categorical":
            out[key] = trial.suggest_categorical(key, list(spec["choices"]))
        else:
            raise ConfigError(
                f"search space of '{key}': unknown type {kind!r} (float, int or categorical)"
            )
    return out


def _worker_tag(number: int) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "trial": number}


def _dead(trial: optuna.trial.FrozenTrial, grace_s: float) -> bool:
    """A RUNNING trial whose worker is gone though its heartbeat may not say so yet: a process
    on this host that no longer exists, or no worker tag at all `grace_s` after the start (a
    worker killed between creating the trial and tagging it never beat a heartbeat either).
    The tag names the trial it was written for: a re-run copies the dead attempt's attributes."""
    tag = trial.user_attrs.get("worker")
    if not isinstance(tag, dict) or tag.get("trial") != trial.number:
        start = trial.datetime_start
        return start is not None and (datetime.datetime.now() - start).total_seconds() > grace_s
    return tag.get("host") == socket.gethostname() and not process_alive(int(tag.get("pid", 0)))


def fail_dead_trials(study: optuna.Study) -> int:
    """Mark FAIL the RUNNING trials whose worker is gone: a stale heartbeat (any host), a dead
    process on this host, or an untagged trial older than the grace period. Each is queued
    again by the storage's retry callback. Returns how many this call failed (another worker
    may fail some first)."""
    storage = study._storage
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    optuna.storages.fail_stale_trials(study)
    retry = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
    backend = getattr(storage, "_backend", storage)  # Optuna wraps RDBStorage in a cache
    grace_s = float(getattr(backend, "grace_period", None) or 60)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _dead(t, grace_s):
            continue
        try:
            if not storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        if retry is not None:
            retry(study, copy.deepcopy(storage.get_trial(t._trial_id)))
    failed = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    n = len(failed - before)
    if n:
        log.warning("marked %d trial(s) whose worker died as failed; they run again", n)
    return n


def retried(trials: Sequence[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the failed attempts that a later trial re-runs."""
    out: set[int] = set()
    for t in trials:
        out.update(RetryHeartbeatStaleTrialCallback.retry_history(t))
    return out


def progress(trials: Sequence[optuna.trial.FrozenTrial]) -> tuple[int, int, int]:
    """(finished, running, waiting) trials, where a failed attempt that was re-run is not a
    finished trial: its re-run is."""
    again = retried(trials)
    finished = sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and t.number not in again)
        for t in trials
    )
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return finished, running, waiting


def open_study(
    name: str,
    storage: str,
    direction: str,
    seed: int,
    n_startup_trials: int,
    pruner_startup: int,
    warmup_steps: int,
    heartbeat_s: int = 10,
    grace_s: int = 60,
    retries: int = 1,
) -> optuna.Study:
    """Create or load the study on an RDB storage with heartbeats and re-runs of dead trials."""
    engine_kwargs: dict[str, Any] = {}
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # local workers share one file
    else:
        engine_kwargs = {"pool_pre_ping": True}  # a server restart does not kill the sweep
    callback = RetryHeartbeatStaleTrialCallback(max_retry=retries) if retries > 0 else None
    for attempt in range(5):
        try:
            rdb = optuna.storages.RDBStorage(
                storage,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_s,
                grace_period=grace_s,
                heartbeat_stale_trial_callback=callback,
            )
            break
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # workers that start together on an empty database race to create its tables;
            # the loser finds them on the next try
            if attempt == 4:
                raise
            time.sleep(0.2 + 0.3 * attempt)
        except ImportError as exc:  # e.g. postgresql:// without its driver
            raise ConfigError(
                f"hparams_search.storage {redact(storage)}: {exc} "
                "(PostgreSQL: pip install 'rotation_dl[postgres]')"
            ) from exc
        except sqlalchemy.exc.OperationalError as exc:
            first = " ".join(str(exc.orig or exc).split())[:300]
            raise ConfigError(
                f"hparams_search.storage {redact(storage)}: cannot connect ({first})"
            ) from exc
    return optuna.create_study(
        study_name=name,
        storage=rdb,
        direction=direction,
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=pruner_startup, n_warmup_steps=warmup_steps
        ),
    )


def redact(url: str) -> str:
    """The storage URL without its password (it goes into messages and logs)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def run_study(
    study: optuna.Study,
    space: Mapping[str, Mapping[str, Any]],
    run_trial: RunTrial,
    n_trials: int,
    seed: int = 0,
    base_overrides: Sequence[str] = (),
    timeout_s: float | None = None,
    poll_s: float = 2.0,
) -> optuna.Study:
    """Run trials until the study holds `n_trials` finished ones (resuming counts earlier).

    Several workers (processes, hosts) may run this on one study. A worker takes a queued re-run
    first, starts a new trial while finished + running ones fall short of `n_trials`, and
    otherwise waits for the running ones: if their worker dies, it takes over their re-run.
    """

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", _worker_tag(trial.number))
        params = suggest(trial, space)
        frozen = study._storage.get_trial(trial._trial_id)
        original = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        trial_seed = seed + (trial.number if original is None else original)
        overrides = [
            *base_overrides,
            *(f"{k}={v}" for k, v in params.items()),
            f"seeds=[{trial_seed}]",
            f"run={study.study_name}/trial_{trial.number:03d}",
        ]
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("seed", trial_seed)
        if original is not None:
            trial.set_user_attr("rerun_of", original)
        try:
            value = run_trial(overrides, lambda fold, s: [PruneOnValRankIC(trial, fold)])
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # recorded on the trial, then Optuna marks it FAIL
            trial.set_user_attr("error", f"{type(exc).__name__}: {' '.join(str(exc).split())}")
            raise
        if value is None or not math.isfinite(value):
            raise ValueError(f"trial {trial.number} produced a non-finite objective ({value})")
        return value

    started = time.monotonic()
    while timeout_s is None or time.monotonic() - started < timeout_s:
        fail_dead_trials(study)
        finished, running, waiting = progress(study.get_trials(deepcopy=False))
        if finished >= n_trials and not waiting:
            break
        if not waiting and finished + running >= n_trials:
            time.sleep(poll_s)  # the last trials run elsewhere: wait in case a worker dies
            continue
        left = None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - started))
        study.optimize(
            objective, n_trials=1, catch=(Exception,), timeout=left, gc_after_trial=True
        )
    return study


def trials_table(study: optuna.Study) -> pl.DataFrame:
    """One row per trial: number, state, value, duration, params, seed."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        dur = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "duration_s": dur,
                "seed": t.user_attrs.get("seed"),
                **{f"param.{k}": str(v) for k, v in t.params.items()},
            }
        )
    return pl.DataFrame(rows)


def write_outputs(study: optuna.Study, trials: Path, best_config: Path) -> dict:
    """The trials table (`trials`, parquet, with a CSV beside it) and the best trial as a
    ready experiment config at `best_config`."""
    table = trials_table(study)
    write_table(table, trials)
    summary: dict[str, Any] = {
        "study": study.study_name,
        "trials": table.height,
        "states": table.group_by("state").len().to_dicts(),
    }
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        lines = [
            "# @package _global_",
            f"# best trial {best.number} of sweep {study.study_name}: objective "
            f"(mean val rank IC) {best.value:.4f}; written {time.strftime('%Y-%m-%d')}",
            f"run: {study.study_name}_best",
            f"seeds: [{best.user_attrs.get('seed', 0)}]",
        ]
        nested: dict[str, dict[str, Any]] = {}
        for key, value in best.params.items():
            group, _, leaf = key.partition(".")
            nested.setdefault(group, {})[leaf] = value
        for group, values in nested.items():
            lines.append(f"{group}:")
            lines += [f"  {k}: {v}" for k, v in values.items()]
        path = best_config
        atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
        summary.update(best_value=best.value, best_params=best.params, best_config=str(path))
    return summary


def all_failed(study: optuna.Study) -> str | None:
    """The first trial's error when every finished trial failed (none completed or pruned)."""
    trials = study.get_trials(deepcopy=False)
    if not trials or any(t.state != optuna.trial.TrialState.FAIL for t in trials):
        return None
    first = min(trials, key=lambda t: t.number)
    return str(first.user_attrs.get("error") or first.system_attrs.get("fail_reason") or "unknown")
