"""The sample market: structure, frictions, determinism, and a planted signal a model can learn."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from rotation_dl.data.validate import IngestPolicy, validate_bars
from rotation_dl.errors import ConfigError
from rotation_dl.industry.aggregate import industry_bars
from rotation_dl.session import A_SHARE
from rotation_dl.synthetic.market import SampleConfig, make_sample_market, write_sample_market


def test_defaults_shape():
    cfg = SampleConfig(n_days=5)
    m = make_sample_market(cfg)
    assert m.classification["industry"].n_unique() == 31
    assert m.classification.height == 300
    assert m.classification.group_by("industry").len()["len"].min() >= 3
    assert m.bars["ts"].dt.date().n_unique() == 5
    assert m.bars.group_by("symbol", pl.col("ts").dt.date()).len()["len"].max() == 16


@pytest.mark.parametrize("bar_minutes, per_day", [(1, 240), (5, 48), (15, 16), (30, 8)])
def test_bar_sizes(bar_minutes, per_day):
    m = make_sample_market(
        SampleConfig(n_industries=2, n_stocks=6, n_days=2, bar_minutes=bar_minutes)
    )
    counts = m.bars.group_by("symbol", pl.col("ts").dt.date()).len()["len"]
    assert counts.max() == per_day
    clean, size, _ = validate_bars(
        m.bars.with_columns(pl.lit("x").alias("_file")), "sample", A_SHARE, IngestPolicy()
    )
    assert size == bar_minutes


def test_seeded_and_valid(tiny_market):
    again = make_sample_market(tiny_market.config)
    assert again.bars.equals(tiny_market.bars)
    other = make_sample_market(SampleConfig(**{**tiny_market.config.__dict__, "seed": 99}))
    assert not other.bars.equals(tiny_market.bars)
    clean, size, dropped = validate_bars(tiny_market.bars, "tiny", A_SHARE, IngestPolicy())
    assert size == 15


def test_frictions_present():
    m = make_sample_market(SampleConfig(n_days=60))
    bars = m.bars
    suspended = bars.filter((pl.col("volume") == 0) & (pl.col("close") > 0))
    assert suspended.height > 0, "suspended bars (zero volume) expected"
    per_day = bars.group_by("symbol", pl.col("ts").dt.date()).len()["len"]
    assert (per_day < 16).sum() > 0, "missing bars expected"
    first_day = bars.group_by("symbol").agg(pl.col("ts").min())["ts"].dt.date()
    assert first_day.n_unique() > 1, "new listings expected"
    assert m.adj_factors["factor"].max() > 1.0, "dividends expected"


def test_u_shaped_volume(tiny_market):
    by_bar = (
        tiny_market.bars.filter(pl.col("volume") > 0)
        .group_by(pl.col("ts").dt.time().alias("t"))
        .agg(pl.col("amount").mean())
        .sort("t")["amount"]
        .to_numpy()
    )
    mid = by_bar[5:11].mean()
    assert by_bar[0] > 1.5 * mid and by_bar[-1] > 1.2 * mid


def test_dividends_leave_adjusted_returns_smooth():
    m = make_sample_market(
        SampleConfig(n_industries=2, n_stocks=20, n_days=80, seed=3, dividend_rate=0.02)
    )
    daily = (
        m.bars.filter(pl.col("close") > 0)
        .group_by("symbol", pl.col("ts").dt.date().alias("date"))
        .agg(pl.col("close").sort_by("ts").last())
        .join(m.adj_factors, on=["symbol", "date"])
        .sort("symbol", "date")
    )
    raw = daily.with_columns(
        (pl.col("close") / pl.col("close").shift(1).over("symbol")).log().alias("r")
    )
    adj = daily.with_columns(
        (
            (pl.col("close") * pl.col("factor"))
            / (pl.col("close") * pl.col("factor")).shift(1).over("symbol")
        )
        .log()
        .alias("r")
    )
    assert raw["r"].min() < adj["r"].min(), "raw prices drop on ex-dates, adjusted do not"
    assert adj["r"].abs().max() <= np.log(1 / 0.9) + 0.02


def test_too_few_stocks():
    with pytest.raises(ConfigError, match="at least 3 stocks per industry"):
        make_sample_market(SampleConfig(n_industries=10, n_stocks=20))


def _late_volume_ic(market, shuffle: bool = False, seed: int = 0) -> float:
    """Mean daily rank IC of the industries' last-hour volume share vs the 5-day forward excess."""
    ib = industry_bars(
        market.bars.lazy(), market.classification, adjustment=market.adj_factors
    ).collect()
    day = (
        ib.group_by("industry", "date")
        .agg(
            (
                pl.col("volume").filter(pl.col("ts").dt.hour() >= 14).sum()
                / pl.col("volume").sum()
            ).alias("late"),
            ((1 + pl.col("ret")).log().sum()).alias("r"),
        )
        .sort("industry", "date")
    )
    fwd = pl.col("r").rolling_sum(5).shift(-5).over("industry")
    day = day.with_columns(fwd.alias("fwd")).drop_nulls("fwd")
    day = day.with_columns((pl.col("fwd") - pl.col("fwd").mean().over("date")).alias("ex"))
    if shuffle:
        rng = np.random.default_rng(seed)
        day = day.with_columns(pl.Series("ex", rng.permutation(day["ex"].to_numpy())))
    ic = day.group_by("date").agg(pl.corr(pl.col("late").rank(), pl.col("ex").rank()).alias("ic"))
    return float(ic["ic"].mean())


def test_planted_signal_is_learnable_from_intraday_volume():
    cfg = SampleConfig(n_industries=20, n_stocks=200, n_days=150, seed=5)
    ic = _late_volume_ic(make_sample_market(cfg))
    assert ic > 0.15, ic
    assert abs(_late_volume_ic(make_sample_market(cfg), shuffle=True)) < 0.05
    none = make_sample_market(SampleConfig(**{**cfg.__dict__, "signal_strength": 0.0}))
    assert abs(_late_volume_ic(none)) < 0.05


def test_write_sample_market_layout(tmp_path):
    paths = write_sample_market(tmp_path, SampleConfig(n_industries=2, n_stocks=6, n_days=3))
    assert len(list(paths["bars"].glob("*.parquet"))) == 3
    assert pl.read_csv(paths["classification"]).columns == ["symbol", "industry", "start", "end"]
    assert pl.read_parquet(paths["signal"]).height == 3 * 2
