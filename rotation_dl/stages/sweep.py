"""`train -m hparams_search=...`: an Optuna search over Hydra-composed training runs (the driver
is `models.search`; this stage composes each trial's config and shares the run's data)."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rotation_dl.config import RunConfig, SweepConfig, compose_run
from rotation_dl.errors import ConfigError, RotationDLError
from rotation_dl.stages.common import layout_of
from rotation_dl.stages.ingest import ensure_store

log = logging.getLogger(__name__)


class SweepFailedError(RotationDLError):
    """Every trial of a sweep failed: nothing was learnt (the first trial's error is named)."""


@dataclass(frozen=True)
class SweepResult:
    summary: dict
    trials: Path
    storage: str

    def describe(self) -> str:
        s = self.summary
        if "jobs" in s:
            return f"submitted {len(s['jobs'])} sweep worker job(s): {', '.join(s['jobs'])}"
        states = ", ".join(f"{d['state']}={d['len']}" for d in s["states"])
        best = (
            f"; best mean val rank IC {s['best_value']:.4f} with {s['best_params']}"
            f"\n  best config: {s['best_config']}"
            if "best_value" in s
            else ""
        )
        sel = s.get("selection") or {}
        chosen = (
            f"\n  choosing the best of {sel['trials']} on {sel['periods']} OOS dates: deflated "
            f"Sharpe ratio of {sel['selected']}'s rank IC {sel['deflated_sharpe']:.3f} "
            f"(threshold SR0 {sel['sr0']:.3f} per date), PBO {sel['pbo']:.2f}"
            if "deflated_sharpe" in sel
            else (f"\n  {sel['note']}" if "note" in sel else "")
        )
        return (
            f"sweep {s['study']}: {s['trials']} trial(s) {states}{best}{chosen}"
            f"\n  trials: {self.trials}\n  storage: {self.storage}"
        )


def shared_overrides(cfg: RunConfig, hs: SweepConfig) -> list[str]:
    """Every trial reuses the parent run's store, one industry-bars file per bar size and one
    panel cache, so no trial rebuilds (or regenerates) the data. Each trial's own outputs go
    to `<paths.sweeps>/<study>/trial_NNN/` and its checkpoints under the parent's, whatever
    `paths.output_dir` the command gave (a fixed one would be shared, and overwritten, by
    every trial)."""
    layout = layout_of(cfg)
    out = [
        f"paths.output_dir={layout.sweeps.resolve()}/${{run}}",
        f"paths.checkpoints={Path(cfg.paths.checkpoints).resolve()}/${{run}}",
        f"paths.store={layout.store.resolve()}",
        f"paths.industry_bars={layout.sweep_industry_bars(hs.study_name)}",
        f"paths.panel_cache={layout.sweep_panel_cache(hs.study_name).resolve()}",
        f"paths.sweeps={layout.sweeps.resolve()}",
    ]
    if cfg.data.kind == "sample" and cfg.data.raw_dir:
        out.append(f"data.raw_dir={Path(cfg.data.raw_dir).resolve()}")
    if cfg.logger.kind == "wandb":
        out.append(f"logger.group={hs.study_name}")
    return out


def hyperparameter_search(
    cfg: RunConfig,
    overrides: Sequence[str],
    compose: Callable[[Sequence[str]], RunConfig] = compose_run,
) -> SweepResult:
    """Run (or resume) the study of `hparams_search`: trials train in this process, in
    `launcher.workers - 1` extra local processes, or as SLURM jobs."""
    from rotation_dl.models import search
    from rotation_dl.stages.train import train

    hs = cfg.hparams_search
    if hs is None:
        raise ConfigError("-m needs a search space: add hparams_search=gru_optuna")
    layout = layout_of(cfg)
    trials = layout.sweep_trials(hs.study_name)
    base = [o for o in overrides if not o.startswith(("run=", "seeds="))]
    base += shared_overrides(cfg, hs)
    ensure_store(cfg)

    def run_trial(trial_overrides: list[str], callbacks) -> float:
        tcfg = compose(trial_overrides)
        return train(tcfg, extra_callbacks=callbacks).objective

    study = search.open_study(
        hs.study_name,
        hs.storage,
        hs.direction,
        hs.seed,
        hs.sampler_startup_trials,
        hs.pruner_startup_trials,
        hs.pruner_warmup_steps,
        hs.heartbeat_s,
        hs.grace_s,
        hs.retries,
    )
    worker_argv = [
        sys.executable, "-m", "rotation_dl.cli", "train", "-m", *overrides,
        "sweep_worker=true", "launcher=basic",
    ]  # fmt: skip
    if not cfg.sweep_worker:
        if cfg.launcher.kind == "submitit_slurm":
            return SweepResult(submit_slurm(cfg, worker_argv), trials, search.redact(hs.storage))
    workers = []
    if hs.workers > 1 and not cfg.sweep_worker:
        workers = [subprocess.Popen(worker_argv) for _ in range(hs.workers - 1)]
    try:
        search.run_study(study, hs.params, run_trial, hs.n_trials, hs.seed, base, hs.timeout_s)
    finally:
        for w in workers:
            w.wait()
    summary = search.write_outputs(
        study,
        layout.sweep_trials(hs.study_name),
        layout.best_sweep_config(Path(hs.best_config_dir), hs.study_name),
    )
    if not cfg.sweep_worker:
        evidence = selection_evidence(cfg, study, compose, layout.sweep_trials(hs.study_name))
        if evidence is not None:
            summary["selection"] = evidence
    failure = search.all_failed(study)
    if failure is not None:
        raise SweepFailedError(
            f"all {summary['trials']} trial(s) of {hs.study_name} failed; the first: {failure}"
        )
    return SweepResult(summary, trials, search.redact(hs.storage))


def selection_evidence(
    cfg: RunConfig,
    study,
    compose: Callable[[Sequence[str]], RunConfig],
    trials_file: Path,
) -> dict | None:
    """How much of the best trial survives the choosing: each complete trial's out-of-sample
    rank-IC series (written beside the trials table as `oos_ic.parquet`, one column per trial,
    on the dates all share), the deflated Sharpe ratio of the best trial's series for the number
    of trials and their dispersion, and the PBO by CSCV (`backtest.inference`)."""
    import optuna
    import polars as pl

    from rotation_dl.artifacts import write_json, write_table
    from rotation_dl.backtest.ic import rank_ic_wide
    from rotation_dl.backtest.inference import selection_summary
    from rotation_dl.features.labels import forward_excess_from_returns
    from rotation_dl.stages.inputs import backtest_returns

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 2:
        return None
    labels = forward_excess_from_returns(backtest_returns(cfg), cfg.backtest.horizon)
    panels = {}
    for t in done:
        panel_path = layout_of(compose(t.user_attrs["overrides"])).factor_panel
        if panel_path.is_file():
            panels[f"trial_{t.number:03d}"] = pl.read_parquet(panel_path)
    if len(panels) < 2:
        return None
    wide = rank_ic_wide(panels, labels)
    names = [c for c in wide.columns if c != "date"]
    chosen = f"trial_{study.best_trial.number:03d}"
    if wide.height < 8 or chosen not in names:
        return {"note": f"only {wide.height} common out-of-sample dates: no selection figures"}
    out = selection_summary([wide[n].to_numpy() for n in names], names, chosen)
    out["series"] = "out-of-sample rank IC per date (the test blocks of the walk-forward)"
    write_table(wide, trials_file.parent / "oos_ic.parquet", csv=False)
    write_json(out, trials_file.parent / "selection.json")
    return out


def submit_slurm(cfg: RunConfig, argv: list[str]) -> dict:
    """Submit `launcher.workers` SLURM jobs running the sweep worker (needs submitit)."""
    try:
        import submitit
    except ImportError as exc:
        raise ConfigError("launcher=submitit_slurm needs `pip install submitit`") from exc
    lc = cfg.launcher
    ex = submitit.AutoExecutor(folder=str(layout_of(cfg).sweeps / "slurm"))
    ex.update_parameters(
        timeout_min=lc.timeout_min,
        slurm_partition=lc.partition,
        gpus_per_node=lc.gpus_per_node,
        cpus_per_task=lc.cpus_per_task,
        mem_gb=lc.mem_gb,
    )
    jobs = [ex.submit(subprocess.run, argv, check=True) for _ in range(lc.workers)]
    return {"jobs": [j.job_id for j in jobs]}
