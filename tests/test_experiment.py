"""`init-experiment`: a user's settings saved once as their own experiment, found from the
working directory (or $ROTATION_DL_USER_CONF), refused when it would not compose."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from rotation_dl.cli import main
from rotation_dl.config import compose_run
from rotation_dl.errors import ConfigError
from rotation_dl.stages.experiment import experiment_yaml, init_experiment


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROTATION_DL_USER_CONF", raising=False)
    (tmp_path / "bars").mkdir()
    (tmp_path / "cls.csv").write_text("symbol,industry\n600000,Banks\n")
    return tmp_path


def test_the_yaml_holds_group_choices_nested_keys_and_absolute_paths(workdir):
    text = experiment_yaml(
        "mine",
        ["data=parquet", "data.bars=bars", "data.mapping.columns={symbol: code}",
         "data.mapping.volume_multiplier=100", "market=us", "data.classification=cls.csv"],
        workdir,
    )  # fmt: skip
    assert text.startswith("# @package _global_\n")
    body = yaml.safe_load(text)
    assert body["defaults"] == [{"override /data": "parquet"}, {"override /market": "us"}]
    assert body["run"] == "mine"
    assert body["data"]["bars"] == str(workdir / "bars")
    assert body["data"]["classification"] == str(workdir / "cls.csv")
    assert body["data"]["mapping"] == {"columns": {"symbol": "code"}, "volume_multiplier": 100}


def test_a_saved_experiment_composes_from_its_folder(workdir):
    res = init_experiment(["mine", "data=parquet", "data.bars=bars", "features.window=7"])
    assert res.path == workdir / "rotation_dl_conf" / "experiment" / "mine.yaml"
    cfg = compose_run(["experiment=mine"])
    assert cfg.run == "mine" and cfg.data.bars == str(workdir / "bars")
    assert cfg.features.window == 7 and cfg.data.kind == "files"
    assert compose_run(["experiment=mine", "features.window=3"]).features.window == 3


def test_it_is_found_through_the_environment_from_any_folder(workdir, tmp_path_factory):
    init_experiment(["mine", "data=parquet", "data.bars=bars"])
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    os.chdir(elsewhere)
    with pytest.raises(ConfigError, match="experiment"):
        compose_run(["experiment=mine"])
    os.environ["ROTATION_DL_USER_CONF"] = str(workdir / "rotation_dl_conf")
    try:
        assert compose_run(["experiment=mine"]).data.bars == str(workdir / "bars")
    finally:
        del os.environ["ROTATION_DL_USER_CONF"]


def test_refusals_leave_nothing_behind(workdir, capsys):
    with pytest.raises(ConfigError, match="did you mean data.bars"):
        init_experiment(["bad", "data=parquet", "data.barz=bars"])
    assert not (workdir / "rotation_dl_conf" / "experiment" / "bad.yaml").exists()
    with pytest.raises(ConfigError, match="built-in experiment"):
        init_experiment(["demo", "features.window=3"])
    init_experiment(["mine", "features.window=3"])
    with pytest.raises(ConfigError, match="exists"):
        init_experiment(["mine", "features.window=4"])
    assert main(["init-experiment"]) == 2
    assert "usage: rotation-dl init-experiment NAME" in capsys.readouterr().err
    assert Path(workdir / "rotation_dl_conf" / "experiment" / "mine.yaml").exists()
