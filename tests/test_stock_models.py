"""Constituent-level models: the stock panel, `model=stock` and `model=pooled`.

The sample market's stock-level planted signal (`stock_signal_strength`) is what the stock model
must find; the industry-level planted signal is what the pooled model must find.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import REPO

from rotation_dl.config import compose_run
from rotation_dl.features.panel import build_panel
from rotation_dl.features.stock_panel import build_stock_panel, stock_feature_names
from rotation_dl.industry.aggregate import (
    add_vwap_gap,
    adjust_bars,
    industry_bars,
    map_industries,
    stock_bar_returns,
)
from rotation_dl.models.config import GRUConfig
from rotation_dl.models.constituents import PooledScorer, StockScorer, aggregate_scores
from rotation_dl.stages.train import plan, train
from rotation_dl.synthetic.market import SampleConfig, make_sample_market
from rotation_dl.training.stock_datamodule import StockDataModule, fit_stock_norm, sample_stocks
from rotation_dl.training.walkforward import walk_forward_folds

SMALL = [
    "experiment=sample_stock",
    "data.sample.n_industries=12",
    "data.sample.n_stocks=120",
    "data.sample.n_days=170",
    "data.sample.bar_minutes=30",
    "features.window=4",
    "model.hidden=16",
    "model.layers=1",
    "trainer.max_epochs=4",
    "trainer.patience=4",
    "trainer.batch_dates=8",
    "trainer.accelerator=cpu",
    "walkforward.min_train_days=80",
    "walkforward.val_days=15",
    "walkforward.retrain_every=25",
    "walkforward.max_folds=2",
    "logger=none",
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Store, industry bars and panel caches shared by every run of this module."""
    root = tmp_path_factory.mktemp("stock")
    return [
        f"data.raw_dir={root / 'raw'}",
        f"paths.store={root / 'store'}",
        f"paths.industry_bars={root / 'ib.parquet'}",
        f"paths.panel_cache={root / 'cache'}",
    ]


def _cfg(shared, out: Path, *extra: str):
    return compose_run(
        [*SMALL, *shared, f"paths.output_dir={out}", f"paths.checkpoints={out / 'ck'}", *extra]
    )


def _stock_panel(shared, out: Path, *extra: str):
    from rotation_dl.stages.stock_panel import stock_panel_for

    cfg = _cfg(shared, out, *extra)
    p = plan(cfg)
    return stock_panel_for(cfg, p.panel, Path(cfg.paths.industry_bars)), p.panel, cfg


# ---- the stock panel ------------------------------------------------------------------------
def test_stock_panel_arrays_masks_and_labels(shared, tmp_path):
    sp, panel, cfg = _stock_panel(shared, tmp_path)
    D, S = len(panel.dates), len(sp.symbols)
    assert sp.dates == panel.dates and sp.industries == panel.industries
    assert sp.features == stock_feature_names(panel.spec)
    assert "up_share" not in sp.features and sp.features[-1] == "rel_ret"
    assert sp.x.shape == (D, S, 8, len(sp.features)) and sp.x.dtype == np.float32
    assert S == 120 and sp.member.min() >= -1 and sp.member.max() < len(panel.industries)
    mask = sp.label_mask()
    assert mask[25:-5].mean() > 0.8  # after the warm-up most stock-days are targets
    lab = np.where(mask, sp.label, np.nan)
    assert np.nanmin(lab) >= -0.5 and np.nanmax(lab) <= 0.5
    per_date_mean = np.nanmean(lab[:-5], axis=1)
    np.testing.assert_allclose(per_date_mean[np.isfinite(per_date_mean)], 0.0, atol=1e-6)
    assert np.isnan(sp.label[-5:]).all()  # no forward 5-day return at the end
    # a stock's first `volume_window` days after its first bar are not active
    first = (np.asarray(sp.amount) > 0).argmax(axis=0)
    late = np.nonzero(first > 0)[0]  # new listings
    assert len(late) and not np.asarray(sp.active)[first[late], late].any()
    assert not np.asarray(sp.active)[first[late] + 19, late].any()  # volume_window = 20
    assert np.asarray(sp.active)[:, late].any(axis=0).all()
    # the manifest pins the inputs
    man = json.loads((Path(cfg.paths.panel_cache).glob("stock-*").__next__() / "manifest.json")
                     .read_text())  # fmt: skip
    assert set(man["inputs"]) >= {"store_version", "industry_bars", "classification"}


def test_rel_ret_is_the_stock_return_minus_its_industry_return(shared, tmp_path):
    """Recomputed independently for one stock and bar from adjusted bars and industry bars."""
    sp, panel, cfg = _stock_panel(shared, tmp_path)
    raw = Path(cfg.data.raw_dir)
    bars = pl.read_parquet(sorted((raw / "bars").glob("*.parquet")))
    cls = pl.read_csv(
        raw / "classification.csv", schema_overrides={"start": pl.Date, "end": pl.Date}
    )
    adj = pl.read_parquet(raw / "adj_factors.parquet")
    stock = stock_bar_returns(
        map_industries(adjust_bars(add_vwap_gap(bars.lazy()), adj), cls), presorted=False
    ).collect()
    ib = pl.read_parquet(cfg.paths.industry_bars)
    d = 60
    day = panel.dates[d]
    s = int(np.nonzero(sp.active[d])[0][3])
    sym = sp.symbols[s]
    row = stock.filter((pl.col("symbol") == sym) & (pl.col("ts").dt.date() == day)).sort("ts")
    ind = ib.filter((pl.col("industry") == row["industry"][0]) & (pl.col("date") == day))
    want = (row["ret"] - row.join(ind, on="ts")["ret_right"]).to_numpy()
    got = sp.x[d, s, : len(want), sp.features.index("rel_ret")]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_stock_bars_are_resampled_to_the_industry_bar_size(shared, tmp_path):
    """industry.bar_minutes=60 on a 30-minute store: 4 slots a day; a 60-minute bar's close is
    its second 30-minute bar's and its high the higher of the two (same previous close)."""
    sp30, _, _ = _stock_panel(shared, tmp_path / "a")
    sp60, _, _ = _stock_panel(
        shared,
        tmp_path / "b",
        "industry.bar_minutes=60",
        f"paths.industry_bars={tmp_path / 'ib60.parquet'}",
    )
    assert sp60.x.shape[2] == 4 and sp30.x.shape[2] == 8
    picks = {
        "close_rel": lambda x: x[..., 1::2],
        "high_rel": lambda x: np.maximum(x[..., 0::2], x[..., 1::2]),
    }
    for name, pick in picks.items():
        k = sp30.features.index(name)
        a = np.asarray(sp60.x[40:60, :, :, k])
        b = pick(np.asarray(sp30.x[40:60, :, :, k]))
        both = np.isfinite(a) & np.isfinite(b)
        assert both.mean() > 0.9
        np.testing.assert_allclose(a[both], b[both], rtol=1e-6, err_msg=name)


def _blocks_from(bars: pl.DataFrame, cls: pl.DataFrame, adj: pl.DataFrame):
    stock = stock_bar_returns(
        map_industries(adjust_bars(add_vwap_gap(bars.lazy()), adj), cls), presorted=False
    ).collect()

    def blocks(first, last):
        day = pl.col("ts").dt.date()
        return stock.filter(day.is_between(first, last)).sort("symbol", "ts")

    return blocks


def _panel_pair(market, bars, tmp_path, name, **kw):
    from rotation_dl.features.spec import FeatureSpec
    from rotation_dl.session import A_SHARE

    spec = FeatureSpec.build(None, 30, 3, 6, 1, A_SHARE)
    ib = industry_bars(bars.lazy(), market.classification, adjustment=market.adj_factors)
    ib = ib.collect()
    panel = build_panel(ib, spec)
    ind_ret = ib.select("industry", "ts", pl.col("ret").alias("ind_ret"))
    symbols = sorted(market.classification["symbol"].to_list())
    sp = build_stock_panel(
        _blocks_from(bars, market.classification, market.adj_factors),
        ind_ret,
        panel.dates,
        panel.industries,
        symbols,
        spec,
        tmp_path / name,
        lookback_days=spec.volume_window + 1,
        **kw,
    )
    return sp, panel


@pytest.fixture(scope="module")
def small_market():
    cfg = SampleConfig(
        n_industries=3, n_stocks=30, n_days=40, bar_minutes=30, seed=3, stock_signal_strength=1
    )
    m = make_sample_market(cfg)
    return m, m.bars.filter(pl.col("close") > 0)


def test_block_build_equals_one_pass_and_16_bit_storage_is_close(small_market, tmp_path):
    m, bars = small_market
    one, _ = _panel_pair(m, bars, tmp_path, "one", block_days=1000)
    many, _ = _panel_pair(m, bars, tmp_path, "many", block_days=3)
    half, _ = _panel_pair(m, bars, tmp_path, "half", block_days=7, storage="float16")
    np.testing.assert_array_equal(np.asarray(one.x), np.asarray(many.x))  # NaN == NaN here
    for name in ("label", "fwd_ret", "active", "member", "amount"):
        np.testing.assert_array_equal(getattr(one, name), getattr(many, name), err_msg=name)
    assert half.x.dtype == np.float16
    ok = np.isfinite(one.x) & (np.abs(one.x) < 60_000)
    np.testing.assert_allclose(np.asarray(half.x, np.float32)[ok], one.x[ok], rtol=2e-3,
                               atol=1e-4)  # fmt: skip
    # bfloat16: float32's range at 8 bits of mantissa, its raw bits on disk, viewed on load
    bf, panel = _panel_pair(m, bars, tmp_path, "bf16", block_days=7, storage="bfloat16")
    assert (
        bf.x.dtype.name == "bfloat16"
        and (tmp_path / "bf16" / "x.npy").stat().st_size
        < (tmp_path / "one" / "x.npy").stat().st_size * 0.51
    )
    wide = np.asarray(bf.x, np.float32)
    np.testing.assert_array_equal(np.isnan(wide), np.isnan(one.x))
    fin = np.isfinite(one.x)
    np.testing.assert_allclose(wide[fin], one.x[fin], rtol=2**-8, atol=0)
    fold = walk_forward_folds(
        len(panel.dates), warmup=8, min_train_days=10, val_days=3, retrain_every=5, gap=3
    )[0]
    want = StockDataModule(one, panel, fold, window=4)
    want.setup()
    days = torch.arange(8, 20)
    for budget in (1.0, 1e-9):  # the panel as one tensor, or date blocks read from the map
        dm = StockDataModule(bf, panel, fold, window=4, norm=want.norm, panel_memory_gb=budget)
        dm.setup()
        assert dm.in_memory is (budget == 1.0)
        got = dm.gather(days)["x"]
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), want.gather(days)["x"].numpy(), atol=0.05)


def test_a_panel_over_the_last_days_with_history_equals_the_full_panel(small_market, tmp_path):
    """Scoring's panel: the last days only, their look-back read from `history` days before
    them: the full build's features, masks, membership and amounts on those days (a stock
    listed inside the history counts from its listing, as in the full build)."""
    m, bars = small_market
    full, panel = _panel_pair(m, bars, tmp_path, "full", block_days=1000)
    first = bars.group_by("symbol").agg(pl.col("ts").min().dt.date().alias("d"))
    listing = max(panel.dates.index(d) for d in first["d"])  # the latest new listing
    assert listing > 0, "the sample lists some stocks part-way through"
    k, h = listing + 3, 7  # h >= volume window + 1 and >= min_listed_days (volume window 6)
    late = bars.filter(pl.col("ts").dt.date() >= panel.dates[k - h])
    from rotation_dl.features.spec import FeatureSpec
    from rotation_dl.session import A_SHARE

    spec = FeatureSpec.build(None, 30, 3, 6, 1, A_SHARE)
    ib = industry_bars(bars.lazy(), m.classification, adjustment=m.adj_factors).collect()
    last = build_stock_panel(
        _blocks_from(late, m.classification, m.adj_factors),
        ib.select("industry", "ts", pl.col("ret").alias("ind_ret")),
        panel.dates[k:],
        panel.industries,
        sorted(m.classification["symbol"].to_list()),
        spec,
        tmp_path / "last",
        lookback_days=h,
        block_days=1000,
        history=panel.dates[k - h : k],
        labels=False,
    )
    np.testing.assert_array_equal(np.asarray(last.x), np.asarray(full.x[k:]))
    for name in ("active", "member", "amount"):
        np.testing.assert_array_equal(getattr(last, name), getattr(full, name)[k:], name)
    assert np.isnan(last.label).all() and np.isnan(last.fwd_ret).all()
    new = last.symbols.index(first.filter(pl.col("d") == panel.dates[listing])["symbol"][0])
    assert not last.active[0, new] and last.active[:, new].any()  # counted from its listing

    # a stock suspended (no bars) from before the first history day until the panel's second
    # day: new to the short read, but `listed_before` says it traded earlier, as the full
    # build knows, so it is active at once; its features equal the full build's from the
    # volume window after its return on (before that, its previous close and baselines
    # would reach across the read's start)
    sym = last.symbols[np.nonzero(np.asarray(last.active)[0])[0][0]]
    day = pl.col("ts").dt.date()
    gap = ~((pl.col("symbol") == sym) & day.is_between(panel.dates[k - h - 3], panel.dates[k]))
    full, _ = _panel_pair(m, bars.filter(gap), tmp_path, "full_gap", block_days=1000)
    s = full.symbols.index(sym)
    assert full.active[k + 1, s] and not full.active[k, s]  # back and active at once

    gapped = industry_bars(bars.filter(gap).lazy(), m.classification, adjustment=m.adj_factors)

    def short(name, listed_before):
        return build_stock_panel(
            _blocks_from(late.filter(gap), m.classification, m.adj_factors),
            gapped.select("industry", "ts", pl.col("ret").alias("ind_ret")).collect(),
            panel.dates[k:], panel.industries, sorted(m.classification["symbol"].to_list()),
            spec, tmp_path / name, lookback_days=h, block_days=1000,
            history=panel.dates[k - h : k], labels=False, listed_before=listed_before,
        )  # fmt: skip

    assert not short("no_hint", []).active[1, s]  # alone, the read takes it for a new listing
    hinted = short("hint", [sym])
    np.testing.assert_array_equal(hinted.active, full.active[k:])
    others = np.arange(len(full.symbols)) != s
    np.testing.assert_array_equal(np.asarray(hinted.x)[:, others], np.asarray(full.x[k:, others]))
    after = 1 + spec.volume_window
    np.testing.assert_array_equal(
        np.asarray(hinted.x[after:, s]), np.asarray(full.x[k + after :, s])
    )
    assert not np.array_equal(np.nan_to_num(hinted.x[1, s]), np.nan_to_num(full.x[k + 1, s]))


def test_traded_before_tells_a_suspended_stock_from_a_new_listing(tmp_path):
    """Scoring's read starts on `first`: of the stocks without bars that day, those with bars
    before it are back from a suspension (listed long ago), the others new listings."""
    from datetime import date

    from conftest import day_bars, next_days, write

    from rotation_dl.data.ingest import ingest_bars
    from rotation_dl.session import A_SHARE
    from rotation_dl.stages.stock_panel import traded_before

    days = next_days(30)
    held = {"600000.SH": days, "600001.SH": days[:3] + days[6:], "600002.SH": days[5:]}
    bars = pl.concat([day_bars([s], d) for s, ds in held.items() for d in ds])
    placeholder = day_bars(["600003.SH"], days[4], price=0.0, volume=0.0)  # no price: no bar
    bars = pl.concat([bars, placeholder, *(day_bars(["600003.SH"], d) for d in days[:4])])
    write(bars, tmp_path / "bars" / "b.parquet")
    ingest_bars(tmp_path / "bars", tmp_path / "store", session=A_SHARE)
    store, symbols = tmp_path / "store", sorted([*held, "600003.SH"])

    def on(i: int, trading_days: int) -> list[str]:
        return traded_before(store, symbols, date.fromisoformat(days[i]), None, trading_days)

    assert on(4, 5) == ["600001.SH", "600003.SH"]  # suspended, or only a placeholder
    assert on(0, 5) == []  # nothing stored before
    assert on(29, 5) == []  # 600003 last traded 25 days before: beyond the look-up, "new"
    assert on(29, 40) == ["600003.SH"]


def test_no_look_ahead_in_features_statistics_and_scores(small_market, tmp_path):
    """Perturb every bar after day t: stock features, normalisation statistics and stock and
    industry scores at days <= t are unchanged."""
    m, bars = small_market
    days = bars["ts"].dt.date().unique().sort()
    t = 25
    later = pl.col("ts").dt.date() > days[t]
    noisy = bars.with_columns(
        [
            pl.when(later).then(pl.col(c) * 1.7).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close", "volume", "amount")
        ]
    )
    (a, pa), (b, pb) = (_panel_pair(m, x, tmp_path, n, block_days=6) for x, n in
                        ((bars, "a"), (noisy, "b")))  # fmt: skip
    np.testing.assert_array_equal(np.asarray(a.x[: t + 1]), np.asarray(b.x[: t + 1]))
    assert not np.array_equal(np.nan_to_num(a.x[t + 1 :]), np.nan_to_num(b.x[t + 1 :]))
    np.testing.assert_array_equal(a.member[: t + 1], b.member[: t + 1])
    np.testing.assert_array_equal(a.active[: t + 1], b.active[: t + 1])
    fold = walk_forward_folds(
        len(pa.dates), warmup=8, min_train_days=10, val_days=3, retrain_every=5, gap=3
    )[0]
    assert fold.train[1] <= t
    na, nb = (fit_stock_norm(p, np.arange(*fold.train)) for p in (a, b))
    assert na == nb
    torch.manual_seed(0)
    cfg = GRUConfig(n_features=a.n_features, hidden=8, layers=1, level="stock")
    net = StockScorer(cfg, 3).eval()
    out = []
    for sp, panel in ((a, pa), (b, pb)):
        dm = StockDataModule(sp, panel, fold, window=4, norm=na)
        dm.setup()
        batch = dm.gather(torch.arange(8, t + 1))
        with torch.no_grad():
            out.append(net(batch["x"], batch["member"], batch["member"] >= 0, batch["weight"]))
    for x, y in zip(out[0], out[1], strict=True):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-6, atol=1e-7)


# ---- aggregation and pooling ------------------------------------------------------------------
def test_aggregations_match_hand_computed_values():
    scores = torch.tensor([[1.0, 2.0, 6.0, -1.0, 5.0]])
    member = torch.tensor([[0, 0, 0, 1, 2]])
    valid = torch.tensor([[True, True, True, True, False]])
    weight = torch.tensor([[1.0, 1.0, 2.0, 3.0, 9.0]])
    mean, counts = aggregate_scores(scores, member, valid, 3, "mean")
    np.testing.assert_allclose(mean.numpy(), [[3.0, -1.0, 0.0]])
    np.testing.assert_array_equal(counts.numpy(), [[3, 1, 0]])  # stock 4 is not valid
    med, _ = aggregate_scores(scores, member, valid, 3, "median")
    np.testing.assert_allclose(med.numpy(), [[2.0, -1.0, 0.0]])
    aw, _ = aggregate_scores(scores, member, valid, 3, "amount_weighted", weight)
    np.testing.assert_allclose(aw.numpy(), [[(1 + 2 + 12) / 4, -1.0, 0.0]])
    z, _ = aggregate_scores(scores, member, valid, 3, "zmean")
    v = np.array([1.0, 2.0, 6.0, -1.0])
    zs = (v - v.mean()) / v.std()
    np.testing.assert_allclose(z.numpy(), [[zs[:3].mean(), zs[3], 0.0]], rtol=1e-5)


def test_pooling_ignores_non_members_and_constituent_order():
    torch.manual_seed(0)
    cfg = GRUConfig(n_features=3, hidden=8, layers=1, dropout=0.0, level="pooled")
    net = PooledScorer(cfg, 2).eval()
    x = torch.randn(1, 5, 2, 3, 3)
    member = torch.tensor([[0, 1, 0, 1, -1]])
    valid = member >= 0
    w = torch.ones(1, 5)
    with torch.no_grad():
        _, ind = net(x, member, valid, w)
        x2 = x.clone()
        x2[0, 4] = 100.0  # not a member of anything
        x2[0, 1] = -3.0  # a member of industry 1 only
        _, ind2 = net(x2, member, valid, w)
        perm = torch.tensor([2, 3, 0, 1, 4])
        _, ind3 = net(x[:, perm], member[:, perm], valid[:, perm], w)
    assert ind[0, 0] == pytest.approx(ind2[0, 0].item(), abs=1e-6)
    assert ind[0, 1] != pytest.approx(ind2[0, 1].item(), abs=1e-4)
    np.testing.assert_allclose(ind.numpy(), ind3.numpy(), rtol=1e-5, atol=1e-6)


def test_stock_sampling_caps_per_industry_and_in_all():
    rng = np.random.default_rng(0)
    cand = np.arange(20)
    member = np.repeat([0, 1, 2, 3], 5)
    a = sample_stocks(cand, member, rng, None, 2)
    assert len(a) == 8 and all((member[a] == k).sum() == 2 for k in range(4))
    b = sample_stocks(cand, member, np.random.default_rng(0), 6, 2)
    assert len(b) == 6 and (np.diff(b) > 0).all()
    assert sample_stocks(cand, member, rng, None, None).tolist() == cand.tolist()


# ---- training ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_stock_model_learns_the_stock_signal_and_not_shuffled_labels(shared, tmp_path):
    real = train(_cfg(shared, tmp_path / "real"))
    stock = real.metrics["oos_stock_rank_ic"]
    assert stock["mean"] > 0.08 and stock["t_stat"] > 3, stock
    assert real.metrics["model_level"] == "stock"
    sfp = pl.read_parquet(real.factor_panel.with_name("stock_factor_panel.parquet"))
    assert set(sfp.columns) >= {"date", "symbol", "score", "fold", "active"}
    fp = pl.read_parquet(real.factor_panel)  # the usual industry factor panel
    assert fp["industry"].n_unique() == 12 and fp["date"].n_unique() == sfp["date"].n_unique()
    # a model fitted to shuffled labels is a random function of signal-bearing features: one
    # seed's OOS IC has a random sign and can reach +-0.1 here, so the test averages 4 seeds
    shuffled = train(
        _cfg(shared, tmp_path / "shuf", "trainer.shuffle_labels=true", "seeds=[0,1,2,3]",
             "trainer.max_epochs=2", "walkforward.max_folds=1")
    )  # fmt: skip
    s = shuffled.metrics["seed_oos_stock_rank_ic"]
    assert s["n_seeds"] == 4 and abs(s["mean"]) < 0.05, s
    assert abs(shuffled.metrics["mean_val_rank_ic"]) < 0.05


@pytest.mark.slow
def test_pooled_model_learns_the_industry_signal(shared, tmp_path):
    res = train(
        _cfg(
            shared,
            tmp_path / "pooled",
            "model=pooled",
            "model.hidden=16",
            "model.layers=1",
            "model.max_constituents=8",
            "trainer.max_epochs=6",
            "trainer.patience=6",
            "walkforward.max_folds=3",
        )
    )
    ind = res.metrics["oos_rank_ic"]
    assert ind["mean"] > 0.07 and ind["t_stat"] > 2, ind  # 0.138, t 3.4 when written
    assert res.metrics["model_level"] == "pooled"


def test_each_aggregation_trains_and_is_deterministic(shared, tmp_path):
    quick = ["trainer.max_epochs=1", "walkforward.max_folds=1"]
    runs = {}
    for how in ("mean", "zmean", "amount_weighted", "median"):
        runs[how] = train(_cfg(shared, tmp_path / how, *quick, f"model.aggregate={how}"))
    again = train(_cfg(shared, tmp_path / "again", *quick, "model.aggregate=mean"))
    a, b = (pl.read_parquet(r.factor_panel).drop("model_version") for r in (runs["mean"], again))
    assert a.equals(b)
    sa, sb = (
        pl.read_parquet(r.factor_panel.with_name("stock_factor_panel.parquet"))
        .drop("model_version") for r in (runs["mean"], again)
    )  # fmt: skip
    assert sa.equals(sb)
    # same stock scores (same seed, aggregation only shapes the industry score) ...
    sm = pl.read_parquet(runs["median"].factor_panel.with_name("stock_factor_panel.parquet"))
    assert sm.drop("model_version").equals(sa)
    # ... and a different industry aggregate
    fm = pl.read_parquet(runs["median"].factor_panel).drop("model_version")
    assert not fm.equals(a)


KILL_SCRIPT = """
import os, signal, sys, json
import lightning as L
from rotation_dl.config import compose_run
from rotation_dl.stages.train import train

class KillMidEpoch(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 2:
            os.kill(os.getpid(), signal.SIGKILL)

args = json.loads(sys.argv[1])
cbs = (lambda f, s: [KillMidEpoch()] if f == 1 else []) if args["kill"] else None
train(compose_run(args["overrides"]), extra_callbacks=cbs)
"""


def test_resume_after_kill_gives_the_same_panels(shared, tmp_path):
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)

    def run(name, kill, resume):
        out = tmp_path / name
        over = [
            *SMALL,
            *shared,
            f"paths.output_dir={out}",
            f"paths.checkpoints={out / 'ck'}",
            "trainer.max_epochs=3",
            "trainer.patience=5",
            f"resume={str(resume).lower()}",
        ]
        return subprocess.run(
            [sys.executable, str(script), json.dumps({"overrides": over, "kill": kill})],
            cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip

    killed = run("k", True, False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "k" / "factor_panel.parquet").exists()
    assert (tmp_path / "k" / "ck" / "fold_00" / "seed_0" / "stock_scores.parquet").exists()
    resumed = run("k", False, True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = run("s", False, False)
    assert straight.returncode == 0, straight.stderr[-2000:]
    for name in ("factor_panel.parquet", "stock_factor_panel.parquet"):
        a = pl.read_parquet(tmp_path / "k" / name).drop("model_version")
        b = pl.read_parquet(tmp_path / "s" / name).drop("model_version")
        assert a.equals(b), name


def test_stock_models_refuse_industry_series(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rotation_dl.cli", "train", "data=sample_series", "model=stock",
         f"paths.output_dir={tmp_path}", "data.sample.n_days=300", "walkforward=short"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "model.level=stock needs constituent stock bars" in last and "Traceback" not in (
        proc.stderr
    )


# ---- export and production scoring ---------------------------------------------------------
@pytest.mark.parametrize("level", ["stock", "pooled"])
def test_export_parity_and_score_match_the_training_stack(shared, tmp_path, level, monkeypatch):
    """ONNX equals torch (<= 1e-5); `score` (torch blocked) rebuilds the latest windows of
    every stock from the store and gives the walk-forward's own stock and industry scores."""
    import onnxruntime as ort
    from test_export import BLOCK_TORCH

    from rotation_dl.export.metadata import read_model
    from rotation_dl.export.onnx_export import load_checkpoint

    out = tmp_path / level
    args = [*SMALL, *shared, f"paths.output_dir={out}", f"paths.checkpoints={out / 'ck'}",
            f"model={level}", "model.hidden=16", "model.layers=1", "trainer.max_epochs=2",
            "walkforward.max_folds=1"]  # fmt: skip
    train(compose_run(args))

    def cli(*cmd, env=None):
        proc = subprocess.run(
            [sys.executable, "-m", "rotation_dl.cli", *cmd, *args],
            cwd=REPO, capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    assert f"{level} level" in cli("export").stdout
    onnx_path = next((out / "ck" / "onnx").glob("*.onnx"))
    model, meta = read_model(onnx_path)
    assert meta["level"] == level and meta["stock_features"][-1] == "rel_ret"
    net, _ = load_checkpoint(meta["checkpoint"])
    torch.manual_seed(1)
    x = torch.randn(2, 7, 4, 8, len(meta["stock_features"]))
    member = torch.tensor([[0, 1, 1, 2, -1, 0, 3]] * 2)
    valid = member >= 0
    weight = torch.rand(2, 7)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        if level == "stock":
            want = net.encoder(x).numpy()
            got = sess.run(None, {"x": x.numpy()})[0]
        else:
            want = torch.cat(net(x, member, valid, weight), dim=1).numpy()
            feeds = {"x": x.numpy(), "member": member.numpy(), "valid": valid.float().numpy()}
            got = np.concatenate(sess.run(None, feeds), axis=1)
    np.testing.assert_allclose(got, want, atol=1e-5)
    if level == "stock":  # stocks scored in chunks on parallel threads: the one-call scores
        from rotation_dl.export import scoring
        from rotation_dl.features.normalize import normalise

        monkeypatch.setattr(scoring, "STOCK_CHUNK", 3)
        scorer = scoring.OnnxScorer([onnx_path], prefer="cpu")
        scorer.workers = 2
        raw = x.numpy() * 3 + 1
        one = sess.run(None, {"x": normalise(raw, scorer.norms[0])})
        got = scorer.run(lambda norm: normalise(raw, norm))
        np.testing.assert_allclose(got, one[0], rtol=0, atol=1e-6)

    block = tmp_path / "block"
    block.mkdir(exist_ok=True)
    (block / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = {**__import__("os").environ, "PYTHONPATH": str(block)}
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a killed score's panel folder (its pid gone) is swept by the next score
    stale = out / "score" / f".panel.{dead.pid}-0123abcd.tmp"
    (stale / "panel").mkdir(parents=True)
    cli("score", env=env)
    assert not stale.exists()
    table = next((out / "score").glob("score_*[0-9].parquet"))
    asof = date_of(table)
    stocks = pl.read_parquet(table.with_name(table.stem + "_stocks.parquet"))
    assert {"symbol", "industry", "score", "rank", "industry_rank", "score_change"} <= set(
        stocks.columns
    )
    fp = pl.read_parquet(out / "factor_panel.parquet").filter(pl.col("date") == asof)
    assert fp.height, "asof lies in the out-of-sample block"
    j = fp.join(pl.read_parquet(table), on="industry").filter(pl.col("score").is_not_null())
    np.testing.assert_allclose(j["score"], j["score_right"], atol=1e-5)
    sfp = pl.read_parquet(out / "stock_factor_panel.parquet").filter(pl.col("date") == asof)
    js = sfp.join(stocks, on="symbol")
    assert js.height == sfp.height == stocks.height > 50
    np.testing.assert_allclose(js["score"], js["score_right"], atol=1e-5)
    assert not list((out / "score").glob(".*"))  # nothing temporary left


def date_of(path: Path):
    from datetime import date

    return date.fromisoformat(path.stem.removeprefix("score_")[:10])


@pytest.mark.slow
def test_ddp_two_process_gloo_matches_single_process(shared, tmp_path):
    """`model=stock` under 2-process DDP on CPU (gloo) gives the single-process panels.

    Batches hold every training date and every stock (max_stocks=null) and the loss is the
    per-date IC averaged over dates, so each step's gradient is the same mean in both runs (DDP
    averages the two ranks' halves); tolerance 1e-4 on scores demeaned per date: the IC loss
    leaves the output bias without a gradient, so Adam moves it by float noise (a shift of
    every score on a date, invisible to ranks and to the cross-sectional loss)."""
    common = [
        *SMALL,
        *shared,
        "trainer.batch_dates=256",
        "model.max_stocks=null",
        "loss=ic",
        "trainer.max_epochs=2",
        "walkforward.max_folds=1",
        "trainer.patience=10",
    ]

    def run(name, *extra):
        out = tmp_path / name
        proc = subprocess.run(
            [sys.executable, "-m", "rotation_dl.cli", "train", *common, *extra,
             f"paths.output_dir={out}", f"paths.checkpoints={out / 'ck'}"],
            cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    warm = tmp_path / "warm"
    train(compose_run([*common, f"paths.output_dir={warm}", f"paths.checkpoints={warm / 'ck'}"]))
    run("single")
    ddp = run("ddp", "trainer=ddp_cpu")
    assert ddp.stderr.count("fold 1/1 seed 0") == 2, "two ranks ran"
    assert ddp.stdout.count("train: ") == 1, "only rank zero reports"
    for name, key in (("factor_panel", "industry"), ("stock_factor_panel", "symbol")):
        a, b = (
            pl.read_parquet(tmp_path / n / f"{name}.parquet").sort("date", key)
            for n in ("single", "ddp")
        )
        assert a.select("date", key).equals(b.select("date", key))
        a, b = (f.select(pl.col("score") - pl.col("score").mean().over("date")) for f in (a, b))
        np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), atol=1e-4)
    assert not list((tmp_path / "ddp").rglob("*.tmp"))


@pytest.mark.gpu
@pytest.mark.parametrize("fits", [True, False])
def test_on_device_panel_and_streamed_blocks_give_the_cpu_batches(small_market, tmp_path, fits):
    """CUDA: the panel on the GPU (it fits the budget) or streamed date blocks through pinned
    memory (it does not) give the CPU batch, and a bf16-autocast step of each model runs."""
    m, bars = small_market
    sp, panel = _panel_pair(m, bars, tmp_path, "gpu", block_days=10)
    fold = walk_forward_folds(
        len(panel.dates), warmup=8, min_train_days=10, val_days=3, retrain_every=5, gap=3
    )[0]
    cpu = StockDataModule(sp, panel, fold, window=4)
    cpu.setup()
    budget = 1.0 if fits else 1e-9
    gpu = StockDataModule(sp, panel, fold, window=4, on_device=True, panel_memory_gb=budget)
    gpu.setup()
    assert gpu.in_memory is fits
    days = torch.arange(8, 20)
    want = cpu.gather(days)
    moved = gpu.on_before_batch_transfer(days, 0)
    moved = {k: v.cuda() for k, v in moved.items()} if isinstance(moved, dict) else moved.cuda()
    got = gpu.on_after_batch_transfer(moved, 0)
    assert got["x"].is_cuda
    for k in want:
        np.testing.assert_allclose(got[k].cpu().numpy(), want[k].numpy(), atol=1e-6, err_msg=k)
    for level in ("stock", "pooled"):
        cfg = GRUConfig(n_features=sp.n_features, hidden=8, layers=1, level=level)
        net = (StockScorer if level == "stock" else PooledScorer)(cfg, 3).cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            s, n = net(got["x"], got["member"], got["valid"], got["weight"])
        (s.float().mean() + n.float().mean()).backward()
        assert torch.isfinite(s.float()).all() and torch.isfinite(n.float()).all()


def test_damaged_stock_panel_cache_is_rebuilt_and_concurrent_builds_keep_one(shared, tmp_path):
    """A truncated cached array is rebuilt (not a traceback), to the same numbers; a build
    that finishes after another of the same key keeps the first one's folder; a killed
    build's temporary folder is removed by the next build."""
    from rotation_dl.features.stock_panel import CorruptPanelError, load_stock_panel

    sp, panel, cfg = _stock_panel(shared, tmp_path)
    before = np.array(sp.x)
    folder = Path(sp.extra["dir"])
    (folder / "x.npy").write_bytes((folder / "x.npy").read_bytes()[:5000])
    with pytest.raises(CorruptPanelError, match="x.npy"):
        load_stock_panel(folder)
    again, _, _ = _stock_panel(shared, tmp_path)
    np.testing.assert_array_equal(np.asarray(again.x), before)
    inode = (folder / "manifest.json").stat().st_ino
    killed = folder.parent / ".stock-0000.999999999-abcdef12.tmp"  # a dead build's leftovers
    (killed / "x.npy").parent.mkdir()
    (killed / "x.npy").write_bytes(b"partial")
    from rotation_dl.stages.stock_panel import build_stock_panel_for

    ind_ret = pl.read_parquet(cfg.paths.industry_bars, columns=["industry", "ts", "ret"])
    late = build_stock_panel_for(
        cfg, panel.spec, panel.dates, panel.industries, ind_ret.rename({"ret": "ind_ret"}), folder
    )
    assert (folder / "manifest.json").stat().st_ino == inode  # the first build was kept
    np.testing.assert_array_equal(np.asarray(late.x), before)
    assert not [p for p in folder.parent.iterdir() if p.name.endswith(".tmp")]  # removed
