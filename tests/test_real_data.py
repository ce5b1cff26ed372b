"""Real A-share data (skipped with a reason when ROTATION_DL_DATA_ROOT has no data)."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import data_root, feature_spec

from rotation_dl.data.ingest import ingest_bars
from rotation_dl.data.readers import ColumnMapping, read_classification
from rotation_dl.data.store import read_manifest, scan_store
from rotation_dl.industry.build import build_industry_bars
from rotation_dl.session import A_SHARE

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

SW = {"symbol": "stock_code", "industry": "l1_name"}


@pytest.fixture(scope="module")
def store_15min(tmp_path_factory):
    root = data_root() / "ashare_15min_2025_2026"
    store = tmp_path_factory.mktemp("real") / "store"
    report = ingest_bars(
        root / "bars_15min_unadjusted.parquet",
        store,
        ColumnMapping(columns={"ts": "datetime"}),
        chunk_days=60,
        session=A_SHARE,
    )
    return store, report


def test_ingest_15min(store_15min):
    store, report = store_15min
    assert report.bar_minutes == 15 and report.frequency == "intraday"
    assert report.rows_read == 4_792_960
    assert report.dropped["zero_price_bars"] > 0  # suspended bars written as zeros by the feed
    bars = scan_store(store).select("symbol").collect()
    assert bars["symbol"].n_unique() == 1001
    assert bars["symbol"].str.contains(r"^\d{6}\.(SH|SZ)$").all()


def test_industry_bars_15min_sw_level1(store_15min, tmp_path):
    store, _ = store_15min
    root = data_root()
    res = build_industry_bars(
        store,
        root / "sw_industry_classification" / "stock_sw2021_latest.csv",
        tmp_path / "industry.parquet",
        classification_columns=SW,
        adjusted_daily=root / "ashare_15min_2025_2026" / "daily_qfq_2020_2026.parquet",
        adjusted_daily_columns={"ts": "date"},
        on_unmapped="fail",
        session=A_SHARE,
    )
    f = res.frame
    assert f["industry"].n_unique() == 31
    assert f["date"].n_unique() == 300
    assert f.height == 31 * 300 * 16
    traded = f.filter(pl.col("n_active") > 0)
    cols = ["open", "high", "low", "close", "ret", "ret_ew", "ret_aw", "up_share"]
    assert (
        traded.select(pl.col(cols).is_null().sum() + pl.col(cols).is_nan().sum())
        .sum_horizontal()
        .item()
        == 0
    )
    # adjusted across days: no industry shows an ex-dividend-sized drop at the open
    first = traded.filter(pl.col("ts").dt.hour() == 9)
    assert first["ret_ew"].min() > -0.11


def test_ingest_daily_with_mapping(tmp_path):
    root = data_root() / "ashare_daily_qfq_2020_2025"
    mapping = ColumnMapping(columns={"symbol": "code", "ts": "date"}, volume_multiplier=100)
    report = ingest_bars(
        root / "daily_qfq.parquet", tmp_path / "daily", mapping, chunk_days=250, session=A_SHARE
    )
    assert report.frequency == "daily" and report.rows_read == 4_062_884
    man = read_manifest(tmp_path / "daily")
    assert man.partition == "month"
    df = scan_store(tmp_path / "daily").collect()
    assert df.height == 4_062_884 and df["symbol"].n_unique() == 3068
    cls = read_classification(
        data_root() / "sw_industry_classification" / "stock_sw2021_latest.csv", columns=SW
    )
    assert df.select("symbol").unique().join(cls, on="symbol", how="anti").height == 0
    sample = df.filter(pl.col("symbol") == "000001.SZ").sort("date").row(0, named=True)
    assert sample["close"] == pytest.approx(13.97, abs=1e-3)
    assert sample["volume"] == pytest.approx(153_020_000, rel=1e-4)  # lots x 100


@pytest.fixture(scope="module")
def daily_real(tmp_path_factory):
    root = data_root() / "ashare_daily_qfq_2020_2025"
    mapping = ColumnMapping(columns={"symbol": "code", "ts": "date"}, volume_multiplier=100)
    store = tmp_path_factory.mktemp("daily") / "store"
    ingest_bars(root / "daily_qfq.parquet", store, mapping, chunk_days=250, session=A_SHARE)
    cls = read_classification(
        data_root() / "sw_industry_classification" / "stock_sw2021_latest.csv", columns=SW
    )
    return scan_store(store).collect(), cls, store


def test_diffusion_baseline_real(daily_real, tmp_path):
    from rotation_dl.backtest.returns import industry_returns
    from rotation_dl.config import compose_run
    from rotation_dl.stages.evaluate import baseline

    daily, cls, store = daily_real
    rets = industry_returns("constituents", daily=daily, classification=cls)
    assert rets["industry"].n_unique() == 31
    assert rets["ret"].abs().max() < 0.2  # equal-weight industry days, adjusted prices
    cfg = compose_run(
        [
            "data=ashare_daily",
            f"paths.data_root={data_root()}",
            f"paths.store={store}",
            f"paths.output_dir={tmp_path}",
            "baseline.all_variants=true",
        ]
    )
    summary = baseline(cfg).summary
    assert {c["variant"] for c in summary["comparison"]} == {
        "lag",
        "multi_horizon",
        "above_ma",
        "ema",
    }
    years = pl.read_parquet(tmp_path / "baseline" / "diffusion_multi_horizon_years.parquet")
    assert years["year"].to_list() == [2020, 2021, 2022, 2023, 2024, 2025]
    hold = pl.read_parquet(tmp_path / "baseline" / "diffusion_multi_horizon_holdings.parquet")
    assert hold.group_by("date").len()["len"].max() == 6


def test_timing_real_whole_universe(daily_real):
    from rotation_dl.baselines.timing import run_timing

    daily, _, _ = daily_real
    out = run_timing(daily, universe="all")
    assert out["universe"] == "all stocks"
    assert out["series"]["universe_size"].max() > 2900
    assert out["grid"].height == 11


@pytest.mark.parametrize("arch", ["flat", "hierarchical"])
def test_onnx_parity_on_real_windows(store_15min, tmp_path, arch):
    """ONNX Runtime and torch agree to 1e-5 on real 15-min industry windows."""
    import warnings

    import numpy as np
    import onnxruntime as ort
    import torch

    from rotation_dl.features.normalize import fit_norm_stats, normalise
    from rotation_dl.features.panel import build_panel
    from rotation_dl.models.gru import GRUConfig, build_net

    store, _ = store_15min
    root = data_root()
    res = build_industry_bars(
        store,
        root / "sw_industry_classification" / "stock_sw2021_latest.csv",
        None,
        classification_columns=SW,
        start=__import__("datetime").date(2025, 11, 1),
        adjusted_daily=root / "ashare_15min_2025_2026" / "daily_qfq_2020_2026.parquet",
        adjusted_daily_columns={"ts": "date"},
        chunk_partitions=10_000,
        session=A_SHARE,
    )
    panel = build_panel(res.frame, feature_spec())
    days = np.arange(len(panel.dates))
    z = normalise(
        np.asarray(panel.x),
        fit_norm_stats(panel.x, days, panel.active, panel.spec.features, panel.dates),
    )
    torch.manual_seed(0)
    net = build_net(GRUConfig(n_features=panel.n_features, arch=arch, hidden=32)).eval()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.zeros(1, 2, 5, 16, panel.n_features),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["score"],
            dynamic_axes={"x": {0: "b", 1: "n", 2: "w"}},
        )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    last = len(panel.dates) - 1
    for batch in (1, 8, 64):
        for window in (5, 10, 20):
            ends = [last - (i % 40) for i in range(batch)]
            x = np.stack([z[e - window + 1 : e + 1].transpose(1, 0, 2, 3) for e in ends])
            x = np.ascontiguousarray(x, dtype=np.float32)
            with torch.no_grad():
                ref = net(torch.from_numpy(x)).numpy()
            got = sess.run(None, {"x": x})[0]
            assert ref.shape == (batch, 31)
            assert np.abs(ref - got).max() <= 1e-5, (batch, window)
