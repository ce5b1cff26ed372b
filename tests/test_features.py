"""Features, labels and panel tensors: hand values, masks, caching, train-only statistics."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from conftest import REPO, feature_spec

from rotation_dl.errors import ConfigError
from rotation_dl.features import panel as panel_mod
from rotation_dl.features.bars import FEATURES, bar_features
from rotation_dl.features.labels import forward_excess_rank
from rotation_dl.features.normalize import fit_norm_stats, normalise
from rotation_dl.features.panel import build_panel, cached_panel, load_panel
from rotation_dl.features.spec import FeatureSpec
from rotation_dl.industry.aggregate import industry_bars
from rotation_dl.session import A_SHARE, Session


def _ib(n_days: int = 3, industries=("A", "B"), bars=(time_ := None)):
    rows = []
    d0 = date(2025, 1, 2)
    for k in range(n_days):
        d = d0 + timedelta(days=k)
        for i, ind in enumerate(industries):
            for b, hm in enumerate([(10, 30), (11, 30), (14, 0), (15, 0)]):
                level = (1 + 0.01 * (i + 1)) ** (4 * k + b + 1)
                rows.append(
                    {
                        "industry": ind,
                        "ts": datetime(d.year, d.month, d.day, *hm),
                        "date": d,
                        "open": level / 1.001,
                        "high": level * 1.002,
                        "low": level / 1.003,
                        "close": level,
                        "ret": 0.01 * (i + 1),
                        "ret_ew": 0.01 * (i + 1),
                        "ret_aw": 0.01 * (i + 1),
                        "volume": 100.0 * (b + 1) * (k + 1),
                        "amount": 1000.0 * (b + 1),
                        "n_active": 3,
                        "up_share": 1.0,
                        "vwap_gap": 0.001,
                    }
                )
    return pl.DataFrame(rows).with_columns(pl.col("n_active").cast(pl.UInt32))


def test_feature_values_hand_case():
    f = bar_features(_ib().lazy(), 60, list(FEATURES), volume_window=2, session=A_SHARE).collect()
    a = f.filter(pl.col("industry") == "A").sort("ts")
    day2 = a.filter(pl.col("date") == date(2025, 1, 3))
    prev_close = 1.01**4
    assert day2["close_rel"][0] == pytest.approx(1.01**5 / prev_close - 1)
    assert day2["open_rel"][0] == pytest.approx(1.01**5 / 1.001 / prev_close - 1)
    assert day2["slot"].to_list() == [0, 1, 2, 3]
    # volume on day 2 at slot 0 is 200 vs 100 on day 1
    assert day2["log_volume_rel"][0] == pytest.approx(np.log1p(200) - np.log1p(100))
    assert a.filter(pl.col("date") == date(2025, 1, 2))["close_rel"].is_null().all()
    assert (a["up_share"] == 0.5).all()


def test_unknown_feature():
    with pytest.raises(ConfigError, match="unknown feature"):
        bar_features(_ib().lazy(), 60, ["nope"], volume_window=2, session=A_SHARE)


def test_labels_hand_case():
    daily = pl.DataFrame(
        {
            "industry": ["A"] * 3 + ["B"] * 3 + ["C"] * 3,
            "date": [date(2025, 1, d) for d in (2, 3, 6)] * 3,
            "close": [1.0, 1.1, 1.21, 1.0, 1.0, 1.0, 1.0, 0.9, 0.81],
        }
    )
    out = forward_excess_rank(daily.lazy(), horizon=1).collect().sort("date", "industry")
    first = out.filter(pl.col("date") == date(2025, 1, 2))
    assert first["fwd_ret"].to_list() == pytest.approx([0.1, 0.0, -0.1])
    assert first["fwd_excess"].to_list() == pytest.approx([0.1, 0.0, -0.1])
    assert first["label"].to_list() == pytest.approx([0.5, 0.0, -0.5])
    assert out.filter(pl.col("date") == date(2025, 1, 6))["label"].is_null().all()


@pytest.fixture(scope="module")
def tiny_ib(tiny_market):
    return industry_bars(
        tiny_market.bars.lazy(), tiny_market.classification, adjustment=tiny_market.adj_factors
    ).collect()


def test_panel_shapes_and_masks(tiny_ib):
    p = build_panel(tiny_ib, feature_spec())
    assert p.x.shape == (30, 3, 16, len(FEATURES))
    assert p.label.shape == (30, 3) and p.x.dtype == np.float32
    assert np.isnan(p.label[-5:]).all() and np.isfinite(p.label[:-5]).all()
    assert p.label_mask()[:-5].all()
    np.testing.assert_allclose(np.nanmean(p.label[:-5], axis=1), 0.0, atol=1e-6)


def test_panel_cache(tiny_ib, tmp_path, monkeypatch):
    src = tmp_path / "ib.parquet"
    tiny_ib.write_parquet(src)
    spec = feature_spec()
    p1 = cached_panel(src, spec, tmp_path / "cache")
    assert isinstance(p1.x, np.memmap)
    monkeypatch.setattr(panel_mod, "build_panel", lambda *a, **k: pytest.fail("rebuilt"))
    p2 = cached_panel(src, spec, tmp_path / "cache")
    np.testing.assert_array_equal(np.asarray(p1.x), np.asarray(p2.x))
    monkeypatch.undo()
    tiny_ib.filter(pl.col("date") < tiny_ib["date"].max()).write_parquet(src)  # changed input
    p3 = cached_panel(src, spec, tmp_path / "cache")
    assert p3.x.shape[0] == 29 and p3.source_hash != p1.source_hash
    other = cached_panel(src, feature_spec(horizon=3), tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("panel-*"))) == 2 and other.spec.horizon == 3
    assert not list((tmp_path / "cache").glob("*.pkl"))
    assert (
        load_panel(
            tmp_path / "cache" / next(p.name for p in (tmp_path / "cache").glob("panel-*"))
        ).x.ndim
        == 4
    )


def test_norm_fitted_on_train_days_only(tiny_ib):
    p = build_panel(tiny_ib, feature_spec())
    train = np.arange(5, 20)
    s1 = fit_norm_stats(p.x, train, p.active, p.spec.features, p.dates)
    x2 = np.array(p.x)
    x2[20:] *= 100.0  # change everything after training
    s2 = fit_norm_stats(x2, train, p.active, p.spec.features, p.dates)
    assert s1 == s2
    z = normalise(np.asarray(p.x), s1)
    assert np.isfinite(z).all() and np.abs(z).max() <= s1.clip
    sub = z[train][p.active[train]].reshape(-1, z.shape[-1])
    np.testing.assert_allclose(sub.mean(axis=0), 0.0, atol=0.15)


def test_spec_round_trip_and_session_required():
    spec = feature_spec(features=("close_rel", "bar_ret"), horizon=3)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["session"] == [["09:30", "11:30"], ["13:00", "15:00"]]
    old = {k: v for k, v in spec.to_dict().items() if k != "session"}
    with pytest.raises(ConfigError, match="no trading session"):
        FeatureSpec.from_dict(old)
    assert spec.bars_per_day == 16 and feature_spec(bar_minutes=0).bars_per_day == 1
    assert spec.warmup_days(10) == 10 + 20 // 4
    with pytest.raises(ConfigError, match="unknown feature"):
        FeatureSpec.build(["nope"], 15, 5, 20, 1, A_SHARE)


def test_cache_built_with_another_session_is_rebuilt(tiny_ib, tmp_path, monkeypatch):
    """The session is part of the spec: same input, other session -> another cache entry."""
    src = tmp_path / "ib.parquet"
    tiny_ib.write_parquet(src)
    cached_panel(src, feature_spec(), tmp_path / "cache")
    longer = Session.from_strings([["09:30", "11:30"], ["13:00", "15:15"]])  # 17 bars a day
    calls = []
    real = panel_mod.build_panel
    monkeypatch.setattr(panel_mod, "build_panel", lambda *a, **k: calls.append(1) or real(*a, **k))
    p = cached_panel(src, feature_spec(session=longer), tmp_path / "cache")
    assert calls == [1] and p.spec.session == longer and p.bars_per_day == 17
    assert len(list((tmp_path / "cache").glob("panel-*"))) == 2


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("features/bars.py", 'pl.col("close") / _PDC - 1', 'pl.col("close") / _PDC - 1.0'),
        # the previous day's close behind every *_rel feature and the label
        (
            "features/daygrid.py",
            "return _previous_day_close(",
            "return 1.0 * _previous_day_close(",
        ),
        # the stock bars' returns behind the stock panel
        (
            "industry/aggregate.py",
            'bars.filter(pl.col("close") > 0)',
            'bars.filter(pl.col("close") > 0.0)',
        ),
        ("session.py", "int(hh) * 60 + int(mm)", "int(hh) * 60 + int(mm) * 1"),
    ],
)
def test_cache_key_covers_every_module_that_shapes_a_feature_or_label(tmp_path, module, old, new):
    """Editing a formula in any module the panel builds reach changes the cache key (a stale
    cache is never reused), while the spec itself is unchanged."""
    copy = tmp_path / "pkg"
    shutil.copytree(REPO / "rotation_dl", copy / "rotation_dl")
    code = (
        "from rotation_dl.features.spec import FeatureSpec\n"
        "from rotation_dl.session import A_SHARE\n"
        "print(FeatureSpec.build(None, 15, 5, 20, 1, A_SHARE).cache_key())"
    )

    def key() -> str:
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=copy, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    before = key()
    assert before == key() == feature_spec().cache_key()
    path = copy / "rotation_dl" / module
    text = path.read_text()
    edited = text.replace(old, new)
    assert edited != text
    path.write_text(edited)
    assert key() != before


def test_the_cache_key_leaves_out_modules_that_shape_no_number():
    """Modules that only name errors and paths are left out: a reworded error message
    does not throw away every cached panel."""
    from rotation_dl.features.spec import definition_modules

    modules = definition_modules()
    assert {"rotation_dl.features.daygrid", "rotation_dl.session"} <= set(modules)
    assert "rotation_dl.errors" not in modules and "rotation_dl.artifacts" not in modules


def test_a_feature_that_carries_nothing_is_named_and_left_out_unless_asked_for(
    tiny_market, tmp_path, caplog
):
    """vwap_gap is 0 everywhere when amounts were derived as close x volume: the plan leaves
    it out of the model's inputs and says so; named in features.names it stays."""
    from rotation_dl.config import compose_run
    from rotation_dl.features.panel import constant_features
    from rotation_dl.industry.aggregate import industry_bars
    from rotation_dl.layout import RunLayout
    from rotation_dl.stages.train import plan_walk_forward

    ib = industry_bars(
        tiny_market.bars.lazy(), tiny_market.classification, adjustment=tiny_market.adj_factors
    ).collect()
    path = tmp_path / "ib.parquet"
    ib.with_columns(pl.lit(0.0).alias("vwap_gap")).write_parquet(path)
    keys = [
        "features.window=4",
        "walkforward.min_train_days=8",
        "walkforward.val_days=3",
        "walkforward.retrain_every=5",
        "walkforward.gap=2",
        f"paths.output_dir={tmp_path}",
    ]
    cfg = compose_run(keys)
    layout = RunLayout.from_paths(cfg.paths)
    with caplog.at_level("WARNING"):
        p = plan_walk_forward(path, layout, cfg.features, cfg.walkforward, A_SHARE)
    assert "vwap_gap" not in p.spec.features and p.panel.n_features == len(p.spec.features)
    assert "vwap_gap (always 0)" in p.describe() and "vwap_gap" in caplog.text
    assert not constant_features(p.panel)
    named = compose_run([*keys, "features.names=[close_rel,vwap_gap]"])
    kept = plan_walk_forward(path, layout, named.features, named.walkforward, A_SHARE)
    assert kept.spec.features == ("close_rel", "vwap_gap")
