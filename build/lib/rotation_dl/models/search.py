"""Hyper-parameter sweeps with Optuna over Hydra-composed runs, robust to crashes.

Why not the Hydra Optuna sweeper plugin: it pins Optuna 2.10, offers no pruning, and a killed
sweep cannot resume its study. This driver uses a maintained Optuna directly:

* the study lives in an RDB storage (SQLite by default), so re-running the same command resumes
  it: trials left RUNNING by a killed sweep are marked FAIL and only the remaining trials run;
* a trial that raises or returns NaN is recorded FAIL and the sweep goes on;
* hopeless trials are pruned on their validation rank IC by a Lightning callback;
* each trial's config overrides and seed are stored on the trial, so any trial can be re-run;
* `workers > 1` starts that many worker processes sharing the storage (one machine), and the
  same command run as SLURM jobs against a shared RDB fans out over a cluster.

The driver takes a `run_trial(overrides, callbacks) -> float` function from the sweep stage, so it
never imports Hydra itself.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import polars as pl

from rotation_dl.artifacts import atomic_write_bytes, write_table
from rotation_dl.errors import ConfigError

log = logging.getLogger(__name__)

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


def fail_stale_trials(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a killed sweep as FAIL; returns how many."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        n += 1
    if n:
        log.warning("marked %d trial(s) left running by an interrupted sweep as failed", n)
    return n


def open_study(
    name: str,
    storage: str,
    direction: str,
    seed: int,
    n_startup_trials: int,
    pruner_startup: int,
    warmup_steps: int,
) -> optuna.Study:
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction=direction,
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=pruner_startup, n_warmup_steps=warmup_steps
        ),
    )


def finished(study: optuna.Study) -> int:
    states = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.FAIL,
    )
    return len(study.get_trials(deepcopy=False, states=states))


def run_study(
    study: optuna.Study,
    space: Mapping[str, Mapping[str, Any]],
    run_trial: RunTrial,
    n_trials: int,
    seed: int = 0,
    base_overrides: Sequence[str] = (),
    timeout_s: float | None = None,
) -> optuna.Study:
    """Run trials until the study holds `n_trials` finished ones (resuming counts earlier)."""

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        overrides = [
            *base_overrides,
            *(f"{k}={v}" for k, v in params.items()),
            f"seeds=[{seed + trial.number}]",
            f"run={study.study_name}/trial_{trial.number:03d}",
        ]
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("seed", seed + trial.number)
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

    remaining = n_trials - finished(study)
    while remaining > 0:
        study.optimize(
            objective, n_trials=1, catch=(Exception,), timeout=timeout_s, gc_after_trial=True
        )
        remaining = n_trials - finished(study)
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
