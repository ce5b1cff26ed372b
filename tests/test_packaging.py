"""The package as a user installs it: every package is in the wheel with every config, and
`pip install rotation_dl[inference]` alone gives a working `rotation-dl score` (no torch)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
from conftest import REPO, SMALL_TRAIN


def test_every_package_directory_is_listed():
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "rotation_dl").rglob("__init__.py")
    }
    assert found | {"rotation_dl.conf"} == listed


def _run(args, **kw):
    proc = subprocess.run(args, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


@pytest.mark.slow
def test_installed_wheel_scores_with_the_inference_extra_only(tmp_path):
    wheels = tmp_path / "dist"
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ beside the sources
    shutil.copytree(REPO / "rotation_dl", src / "rotation_dl",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copytree(REPO / "conf", src / "conf")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(wheels), str(src)], cwd=tmp_path)  # fmt: skip
    wheel = next(wheels.glob("rotation_dl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("rotation_dl/conf/") for n in names if n.endswith(".yaml")}
    expected = {p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert shipped == expected

    # a trained and exported sample model, made with the development install
    run = [
        f"paths.output_dir={tmp_path / 'out'}",
        f"paths.checkpoints={tmp_path / 'ck'}",
        *SMALL_TRAIN,
    ]
    for cmd in ("train", "export"):
        _run([sys.executable, "-m", "rotation_dl.cli", cmd, *run], cwd=REPO)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ROTATION_DL_CONF_DIR")}
    env["PIP_CONSTRAINT"] = ""
    _run([str(py), "-m", "pip", "install", "-q", f"{wheel}[inference]"], env=env)
    no_torch = subprocess.run([str(py), "-c", "import torch"], capture_output=True, env=env)
    assert no_torch.returncode != 0, "the inference extra must not bring torch"
    elsewhere = tmp_path / "elsewhere"  # no conf/ beside it: the packaged configs are used
    elsewhere.mkdir()
    score = _run(
        [str(venv / "bin" / "rotation-dl"), "score", *run, f"paths.score={tmp_path / 'score'}"],
        cwd=elsewhere,
        env=env,
    )
    assert "holdings:" in score.stdout
    assert len(list((tmp_path / "score").glob("score_*.json"))) == 1
