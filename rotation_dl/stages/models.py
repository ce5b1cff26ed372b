"""`models list | promote VERSION | rollback`: the cycle's model registry by hand."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from rotation_dl.config import RunConfig
from rotation_dl.errors import ConfigError
from rotation_dl.production import registry
from rotation_dl.stages.common import layout_of

ACTIONS = ("list", "promote", "rollback")


@dataclass(frozen=True)
class ModelsResult:
    text: str

    def describe(self) -> str:
        return self.text


def registry_text(table: pl.DataFrame) -> str:
    if table.is_empty():
        return "model registry: empty (the first `rotation-dl cycle` registers a model)"
    lines = [
        f"{'ver':>4} {'status':<9} {'fold':>4}  {'trained on':<23} {'val IC':>7} "
        f"{'gate':<7} promoted"
    ]
    for r in table.to_dicts():
        ic = "" if r["val_rank_ic"] is None else f"{r['val_rank_ic']:+.4f}"
        who = f"{r['promoted_at']} by {r['promoted_by']}" if r["promoted_at"] else ""
        lines.append(
            f"{r['version']:>4} {r['status']:<9} {r['fold']:>4}  {r['train']:<23} "
            f"{ic:>7} {r['gate'] or '-':<7} {who}"
        )
        if r["gate"] == "failed":
            lines.append(f"{'':>16}gate: {r['gate_reason']}")
    return "\n".join(lines)


def models(cfg: RunConfig, action: str = "list", version: str | None = None) -> ModelsResult:
    """List the registry, promote a version that passed its gate, or roll back to the model
    live before the current one. Holds the cycle's lock: never while a cycle runs."""
    from rotation_dl.stages.cycle import cycle_lock, user

    layout = layout_of(cfg)
    path = layout.registry
    if action not in ACTIONS:
        raise ConfigError(f"models: unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    if action == "list":
        return ModelsResult(registry_text(registry.table(path)))
    with cycle_lock(layout):
        if action == "promote":
            if version is None or not version.lstrip("v").isdigit():
                raise ConfigError("models promote: give the version, e.g. `models promote 3`")
            e = registry.promote(path, int(version.lstrip("v")), user(), "manual", why="manual")
        else:
            e = registry.rollback(path, user(), "manual")
    return ModelsResult(
        f"model v{e.version} (fold {e.fold}) is live\n" + registry_text(registry.table(path))
    )
