"""Experiment loggers: CSV (default) or wandb (offline unless WANDB_API_KEY is set)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rotation_dl.errors import ConfigError


def logger_factory(
    kind: str,
    save_dir: str | Path,
    run: str,
    hparams: dict[str, Any],
    project: str = "rotation_dl",
    entity: str | None = None,
    group: str | None = None,
) -> Callable[[int, int], Any]:
    """A function (fold, seed) -> Lightning logger(s) that logs `hparams` once per run."""
    save_dir = Path(save_dir)

    def make(fold: int, seed: int) -> Any:
        if kind == "none":
            return False
        if kind == "csv":
            from lightning.pytorch.loggers import CSVLogger

            lg = CSVLogger(save_dir=save_dir, name=f"fold_{fold:02d}", version=f"seed_{seed}")
        elif kind == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            if not os.environ.get("WANDB_API_KEY"):
                os.environ.setdefault("WANDB_MODE", "offline")
            save_dir.mkdir(parents=True, exist_ok=True)
            lg = WandbLogger(
                project=project,
                entity=entity,
                name=f"{run}-fold{fold}-seed{seed}",
                group=group or run,
                save_dir=str(save_dir),
                reinit="finish_previous",
            )
        else:
            raise ConfigError(f"unknown logger kind {kind!r}; use csv, wandb or none")
        lg.log_hyperparams({**hparams, "fold": fold, "seed": seed})
        return lg

    return make


def finish_wandb() -> None:
    """Close any open wandb run (called in `finally` by entry points)."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except ImportError:
        pass
