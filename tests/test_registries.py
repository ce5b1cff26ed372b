"""One list per name: every Literal, YAML choice, YAML comment and sweep choice agrees with the
registry that implements the name, so adding or renaming one cannot leave another behind."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rotation_dl.baselines.diffusion import VARIANTS, Variant
from rotation_dl.config import BaselineConfig, MarketConfig, conf_dir
from rotation_dl.export.scoring import aggregate_stock_scores
from rotation_dl.features.bars import FEATURES
from rotation_dl.features.spec import STOCK_STORAGE
from rotation_dl.models.config import (
    AGGREGATIONS,
    ARCHS,
    LEVELS,
    LOSS_NAMES,
    GRUConfig,
    LossConfig,
)
from rotation_dl.models.constituents import aggregate_scores
from rotation_dl.models.losses import LOSSES
from rotation_dl.session import A_SHARE, A_SHARE_HOURS, Session

CONF = Path(conf_dir())


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def hint(cls: type, name: str) -> tuple:
    return typing.get_args(typing.get_type_hints(cls)[name])


def comment_choices(path: Path, key: str) -> list[str]:
    """The `a | b | c` list in the comment after `key:` in a YAML file."""
    line = next(li for li in path.read_text().splitlines() if li.startswith(f"{key}:"))
    return [c.strip() for c in line.split("#", 1)[1].split("(")[0].split("|")]


def test_losses_are_one_list():
    assert set(LOSSES) == set(LOSS_NAMES) == set(hint(LossConfig, "name"))
    yaml_names = {load(p)["name"] for p in (CONF / "loss").glob("*.yaml")}
    stems = {p.stem for p in (CONF / "loss").glob("*.yaml")}
    assert yaml_names == stems == set(LOSS_NAMES)
    sweep = load(CONF / "hparams_search" / "gru_optuna.yaml")["hparams_search"]["params"]
    assert set(sweep["loss"]["choices"]) <= set(LOSS_NAMES)


def test_diffusion_variants_are_one_list():
    assert VARIANTS == typing.get_args(Variant) == hint(BaselineConfig, "variant")
    assert comment_choices(CONF / "baseline" / "diffusion.yaml", "variant") == list(VARIANTS)
    assert load(CONF / "baseline" / "diffusion.yaml")["variant"] in VARIANTS


def test_model_archs_levels_and_aggregations_are_one_list():
    assert hint(GRUConfig, "arch") == ARCHS and hint(GRUConfig, "level") == LEVELS
    assert hint(GRUConfig, "aggregate") == AGGREGATIONS
    for path in (CONF / "model").glob("*.yaml"):
        m = load(path)
        assert m["arch"] in ARCHS and m["level"] in LEVELS and m["aggregate"] in AGGREGATIONS
    assert comment_choices(CONF / "model" / "stock.yaml", "aggregate") == list(AGGREGATIONS)
    assert comment_choices(CONF / "model" / "flat.yaml", "level") == list(LEVELS)


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_every_aggregation_is_implemented_alike_in_torch_and_numpy(how):
    rng = np.random.default_rng(3)
    scores = rng.standard_normal(10)
    member = np.array([0, 0, 0, 1, 2, 2, -1, 2, 1, 1])  # three stocks an industry (median)
    weight = rng.random(10) * 100
    want, counts = aggregate_stock_scores(scores, member, 3, how, weight)
    m = torch.tensor(member)[None]
    got, got_counts = aggregate_scores(
        torch.tensor(scores)[None], m, m >= 0, 3, how, torch.tensor(weight)[None]
    )
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got_counts[0].numpy(), counts)


def test_feature_and_storage_names_are_one_list():
    f = load(CONF / "features" / "default.yaml")
    assert f["names"] is None or set(f["names"]) <= set(FEATURES)
    assert f["stock_storage"] in STOCK_STORAGE
    assert comment_choices(CONF / "features" / "default.yaml", "stock_storage") == list(
        STOCK_STORAGE
    )
    for path in (CONF / "experiment").glob("*.yaml"):
        names = (load(path).get("features") or {}).get("names")
        assert names is None or set(names) <= set(FEATURES), path.name


def test_the_trading_session_is_written_once():
    assert MarketConfig().session == A_SHARE_HOURS
    assert A_SHARE == Session.from_strings(A_SHARE_HOURS)
    yaml_hours = tuple(tuple(i) for i in load(CONF / "market" / "ashare.yaml")["session"])
    assert yaml_hours == A_SHARE_HOURS
    code = Path(__file__).resolve().parents[1] / "rotation_dl"
    written = [
        str(p.relative_to(code))
        for p in code.rglob("*.py")
        if re.search(r'"09:30",\s*"11:30"', p.read_text())
    ]
    assert written == ["session.py"]
