"""`init-experiment NAME [overrides]`: save a user's own settings (their data above all) once,
as `experiment/NAME.yaml` in their config folder, so `experiment=NAME` is all any command
needs from then on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rotation_dl.artifacts import atomic_write_bytes
from rotation_dl.config import compose_run, conf_dir, user_conf_dir
from rotation_dl.errors import ConfigError

# settings that name files: saved as absolute paths, so the experiment works from any folder
PATH_KEYS = (
    "data.bars",
    "data.classification",
    "data.adjustment",
    "data.shares",
    "data.adjusted_daily",
    "backtest.returns_file",
)


@dataclass(frozen=True)
class ExperimentResult:
    name: str
    path: Path
    text: str

    def describe(self) -> str:
        return (
            f"experiment {self.name} saved: {self.path}\n{self.text}"
            f"from now on: rotation-dl <command> experiment={self.name}"
        )


def config_groups() -> set[str]:
    """The config groups (folders of conf/) an override can choose an option of."""
    return {p.name for p in conf_dir().iterdir() if p.is_dir()}


def experiment_yaml(name: str, overrides: Sequence[str], cwd: Path) -> str:
    """The experiment file for `overrides`: group choices as defaults-list overrides, every
    other key as nested YAML (values parsed as YAML), paths made absolute."""
    groups = config_groups()
    choices: list[dict[str, str]] = []
    values: dict[str, Any] = {"run": name}
    for o in overrides:
        key, sep, raw = o.partition("=")
        key = key.lstrip("+")
        if not sep or not key:
            raise ConfigError(f"init-experiment: '{o}' is not key=value")
        if key == "experiment":
            raise ConfigError("init-experiment: an experiment cannot choose another experiment")
        if key in groups:
            choices.append({f"override /{key}": raw})
            continue
        value = yaml.safe_load(raw) if raw.strip() else None
        if key in PATH_KEYS and isinstance(value, str) and (cwd / value).exists():
            value = str((cwd / value).resolve())
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"init-experiment: '{key}' sets inside a value")
        node[leaf] = value
    body: dict[str, Any] = {"defaults": choices} if choices else {}
    body.update(values)
    head = f"# @package _global_\n# saved by: rotation-dl init-experiment {name}\n"
    return head + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def init_experiment(args: Sequence[str]) -> ExperimentResult:
    """`args`: NAME then overrides. Writes `<user config>/experiment/NAME.yaml` (refusing to
    replace one), then composes `experiment=NAME` to prove it is a valid run; a file that does
    not compose is removed and the error raised."""
    if not args or "=" in args[0]:
        raise ConfigError("usage: rotation-dl init-experiment NAME [key=value ...]")
    name, overrides = args[0], list(args[1:])
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"init-experiment: name {name!r}: use letters, digits, - and _")
    if (conf_dir() / "experiment" / f"{name}.yaml").exists():
        raise ConfigError(f"init-experiment: {name} is a built-in experiment; choose another name")
    path = user_conf_dir() / "experiment" / f"{name}.yaml"
    if path.exists():
        raise ConfigError(f"init-experiment: {path} exists; remove it or choose another name")
    text = experiment_yaml(name, overrides, Path.cwd())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode())
    composed = False
    try:
        compose_run([f"experiment={name}"])
        composed = True
    finally:
        if not composed:  # a file that does not compose (or an interrupted check) is not kept
            path.unlink(missing_ok=True)
    return ExperimentResult(name, path, text)
