"""The layering is a checked contract (import-linter, declared in pyproject.toml), not a hope:
the real package keeps it, and a copy with one import that breaks a layer is refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(
    not LINT.exists(), reason="import-linter is not installed (the dev extra brings it)"
)


def lint(root: Path) -> subprocess.CompletedProcess:
    """lint-imports run in `root`, which holds pyproject.toml and the rotation_dl package."""
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_package_keeps_its_layer_contracts():
    run = lint(ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in run.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        # the store reaching up to the stages (a lower layer importing a higher one)
        ("data/store.py", "from rotation_dl.stages import demo", "Layers"),
        # the old data <-> features loop: the data layer importing a feature definition
        ("data/limits.py", "from rotation_dl.features import labels", "Layers"),
        # the old backtest <-> baselines loop
        ("backtest/engine.py", "from rotation_dl.baselines import diffusion", "Layers"),
        # a stage at the bottom of the stages importing one above it
        ("stages/ingest.py", "from rotation_dl.stages import inputs", "Stages"),
        # production scoring pulling in torch
        ("export/scoring.py", "import torch", "Production scoring"),
    ],
)
def test_an_import_that_breaks_a_layer_is_refused(tmp_path, module, bad_import, contract):
    shutil.copytree(ROOT / "rotation_dl", tmp_path / "rotation_dl")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "rotation_dl" / module
    target.write_text(target.read_text() + f"\n{bad_import}  # noqa\n")
    run = lint(tmp_path)
    assert run.returncode != 0, run.stdout[-2000:]
    broken = run.stdout.split("Broken contracts")[-1]
    assert contract in broken, run.stdout[-3000:]
    assert f"rotation_dl.{module[:-3].replace('/', '.')}" in broken


def test_every_stage_module_has_a_place_in_the_stages_contract():
    """A new stage module cannot slip past the stages layering unnoticed."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    stages = next(c for c in config["contracts"] if c["name"].startswith("Stages"))
    named = {m.strip() for layer in stages["layers"] for m in layer.split("|")}
    modules = {
        f"rotation_dl.stages.{p.stem}"
        for p in (ROOT / "rotation_dl" / "stages").glob("*.py")
        if p.stem != "__init__"
    }
    assert modules == named
