"""Shared fixtures: a tiny synthetic market, raw-file writers, the real-data root."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from rotation_dl.schema import BAR_SCHEMA
from rotation_dl.synthetic.market import SampleConfig, make_sample_market

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return Path(os.environ.get("ROTATION_DL_DATA_ROOT", REPO.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    root = data_root()
    skip_real = pytest.mark.skip(
        reason=f"real A-share data not found at {root} (set ROTATION_DL_DATA_ROOT)"
    )
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    for item in items:
        if "real_data" in item.keywords and not (root / "README.md").exists():
            item.add_marker(skip_real)
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


SMALL_TRAIN = [  # a tiny market and a 1-epoch GRU: the train/export path in seconds
    "data.sample.n_industries=5",
    "data.sample.n_stocks=40",
    "data.sample.n_days=80",
    "features.window=4",
    "model.hidden=8",
    "model.layers=1",
    "trainer.max_epochs=1",
    "walkforward.min_train_days=30",
    "walkforward.val_days=8",
    "walkforward.retrain_every=20",
    "trainer.enable_progress_bar=false",
    "logger=none",
]


TINY = SampleConfig(n_industries=3, n_stocks=36, n_days=30, bar_minutes=15, seed=11)


@pytest.fixture(scope="session")
def tiny_market():
    """3 industries x 36 stocks x 30 days x 16 bars, with the planted signal."""
    return make_sample_market(TINY)


@pytest.fixture(scope="session")
def tiny_panel(tiny_market):
    """The tiny market's industry panel (adjusted industry bars, the default features)."""
    from rotation_dl.features.panel import build_panel
    from rotation_dl.industry.aggregate import industry_bars

    ib = industry_bars(
        tiny_market.bars.lazy(), tiny_market.classification, adjustment=tiny_market.adj_factors
    ).collect()
    return build_panel(ib, feature_spec())


def day_bars(
    symbols=("600000.SH",), day="2025-01-02", bar_minutes=15, price=10.0, volume=1000.0
) -> pl.DataFrame:
    """A clean full day of flat bars for each symbol (A-share session, bar-end stamps)."""
    from rotation_dl.session import A_SHARE

    d = datetime.fromisoformat(day)
    times = [datetime.combine(d.date(), t) for t in A_SHARE.bar_end_times(bar_minutes)]
    rows = [
        (s, t, price, price * 1.01, price * 0.99, price, volume, volume * price)
        for s in symbols
        for t in times
    ]
    return pl.DataFrame(rows, schema=BAR_SCHEMA, orient="row")


def write(df: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.write_csv(path)
    else:
        df.write_parquet(path)
    return path


def next_days(n: int, start: str = "2025-01-02") -> list[str]:
    d = datetime.fromisoformat(start)
    out = []
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d.date().isoformat())
        d += timedelta(days=1)
    return out


def feature_spec(**kw):
    """A FeatureSpec with the defaults of conf/features/default.yaml on the A-share session
    (15-minute bars unless told otherwise); keyword overrides by field name."""
    from dataclasses import replace

    from rotation_dl.features.spec import FeatureSpec
    from rotation_dl.session import A_SHARE

    base = FeatureSpec.build(None, 15, 5, 20, 1, A_SHARE)
    if "features" in kw:
        kw["features"] = tuple(kw["features"])
    return replace(base, **kw)


def split_daily_market(n_days: int, seed: int, at: tuple[int, int]):
    """Daily bars of a small sample market (3 industries, 24 stocks, with its amounts) in
    which two stocks halve (2:1 splits) on trading days `at`, unadjusted, without factors or
    pre_close: (daily bars, classification, the split stocks)."""
    from rotation_dl.data.resample import resample_bars
    from rotation_dl.session import A_SHARE

    m = make_sample_market(
        SampleConfig(n_industries=3, n_stocks=24, n_days=n_days, seed=seed, calendar="XSHG")
    )
    daily = (
        resample_bars(m.bars.filter(pl.col("close") > 0).lazy(), "1d", A_SHARE)
        .collect()
        .sort("symbol", "date")
    )
    days, symbols = daily["date"].unique().sort(), daily["symbol"].unique().sort()
    splits = {symbols[1]: days[at[0]], symbols[9]: days[at[1]]}
    for sym, day in splits.items():
        after = (pl.col("symbol") == sym) & (pl.col("date") >= day)
        daily = daily.with_columns(
            *[pl.when(after).then(pl.col(c) / 2).otherwise(pl.col(c)).alias(c)
              for c in ("open", "high", "low", "close")],
            pl.when(after).then(pl.col("volume") * 2).otherwise(pl.col("volume")).alias("volume"),
        )  # fmt: skip
    return daily, m.classification, sorted(splits)
