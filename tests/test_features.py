"""Features, labels and panel tensors: hand values, masks, caching, train-only statistics."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from rotation_dl.data.industry import industry_bars
from rotation_dl.errors import ConfigError
from rotation_dl.features import panel as panel_mod
from rotation_dl.features.bars import FEATURES, bar_features
from rotation_dl.features.labels import forward_excess_rank
from rotation_dl.features.normalize import apply_norm, fit_norm_stats
from rotation_dl.features.panel import FeatureSpec, build_panel, cached_panel, load_panel


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
    f = bar_features(_ib().lazy(), 60, volume_window=2).collect()
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
        bar_features(_ib().lazy(), 60, ["nope"])


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
    p = build_panel(tiny_ib, FeatureSpec(bar_minutes=15))
    assert p.x.shape == (30, 3, 16, len(FEATURES))
    assert p.label.shape == (30, 3) and p.x.dtype == np.float32
    assert np.isnan(p.label[-5:]).all() and np.isfinite(p.label[:-5]).all()
    assert p.label_mask()[:-5].all()
    np.testing.assert_allclose(np.nanmean(p.label[:-5], axis=1), 0.0, atol=1e-6)


def test_panel_cache(tiny_ib, tmp_path, monkeypatch):
    src = tmp_path / "ib.parquet"
    tiny_ib.write_parquet(src)
    spec = FeatureSpec(bar_minutes=15)
    p1 = cached_panel(src, spec, tmp_path / "cache")
    assert isinstance(p1.x, np.memmap)
    monkeypatch.setattr(panel_mod, "build_panel", lambda *a, **k: pytest.fail("rebuilt"))
    p2 = cached_panel(src, spec, tmp_path / "cache")
    np.testing.assert_array_equal(np.asarray(p1.x), np.asarray(p2.x))
    monkeypatch.undo()
    tiny_ib.filter(pl.col("date") < tiny_ib["date"].max()).write_parquet(src)  # changed input
    p3 = cached_panel(src, spec, tmp_path / "cache")
    assert p3.x.shape[0] == 29 and p3.source_hash != p1.source_hash
    other = cached_panel(src, FeatureSpec(bar_minutes=15, horizon=3), tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("panel-*"))) == 2 and other.spec.horizon == 3
    assert not list((tmp_path / "cache").glob("*.pkl"))
    assert (
        load_panel(
            tmp_path / "cache" / next(p.name for p in (tmp_path / "cache").glob("panel-*"))
        ).x.ndim
        == 4
    )


def test_norm_fitted_on_train_days_only(tiny_ib):
    p = build_panel(tiny_ib, FeatureSpec(bar_minutes=15))
    train = np.arange(5, 20)
    s1 = fit_norm_stats(p.x, train, p.active, p.spec.features, p.dates)
    x2 = np.array(p.x)
    x2[20:] *= 100.0  # change everything after training
    s2 = fit_norm_stats(x2, train, p.active, p.spec.features, p.dates)
    assert s1 == s2
    z = apply_norm(np.asarray(p.x), s1)
    assert np.isfinite(z).all() and np.abs(z).max() <= s1.clip
    sub = z[train][p.active[train]].reshape(-1, z.shape[-1])
    np.testing.assert_allclose(sub.mean(axis=0), 0.0, atol=0.15)
