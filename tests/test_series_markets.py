"""Industry series as input, daily bars into the GRU, other markets and short histories.

Whole pipelines on synthetic markets: 11 sector series over 20 years of daily bars (with a
planted signal the GRU must learn), daily stock bars, a 100-day 1-minute stock market
(walkforward=short) and a US 30-minute market; plus the refusals of constituent-only stages,
daily detection, explicit bar sizes, adjusted closes and the walk-forward plan.
"""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import polars as pl
import pytest
from conftest import write

from rotation_dl.cli import main
from rotation_dl.config import FeatureConfig, compose_run
from rotation_dl.data.ingest import ingest_bars
from rotation_dl.errors import BarSizeError, ConfigError
from rotation_dl.session import A_SHARE, Session
from rotation_dl.synthetic.market import SampleConfig
from rotation_dl.synthetic.series import make_series_market
from rotation_dl.training.walkforward import walk_forward_folds

TINY_GRU = [
    "model.hidden=8",
    "model.layers=1",
    "model.dropout=0.0",
    "trainer.max_epochs=2",
    "trainer.patience=1",
    "trainer.enable_progress_bar=false",
    "logger=none",
]


def _paths(tmp_path) -> list[str]:
    return [f"paths.output_dir={tmp_path / 'o'}", f"paths.checkpoints={tmp_path / 'ckpt'}"]


def _run_pipeline(cfg, with_constituents: bool):
    """ingest -> industry-bars -> train -> export -> score -> backtest -> report (+ the
    constituent stages when there are constituents); returns the results by name."""
    from rotation_dl.stages import evaluate, export, industry, ingest, report, score, train

    out = {"ingest": ingest.ingest(cfg), "industry": industry.industry_bars(cfg)}
    plans: list[str] = []
    out["train"] = train.train(cfg, progress=plans.append)
    out["plan"] = plans[0]
    out["export"] = export.export(cfg)
    out["score"] = score.score(cfg)
    out["backtest"] = evaluate.backtest(cfg)
    if with_constituents:
        out["baseline"] = evaluate.baseline(cfg)
        out["timing"] = evaluate.timing(cfg)
        out["factor_ic"] = evaluate.factor_ic(cfg)
    out["report"] = report.report(cfg)
    return out


# ---- industry series --------------------------------------------------------------------------


def test_sector_series_market_has_the_documented_signal():
    """The planted state predicts the 5-day forward excess return (rank IC ~0.3) and shows in
    volume; the bars are one per day, valid OHLC, 20 years on the US calendar."""
    cfg = SampleConfig(n_industries=11, n_days=5040, bar_minutes=0, start="2003-01-02")
    m = make_series_market(cfg)
    b = m.bars
    assert b["symbol"].n_unique() == 11 and b.height == 11 * 5040
    assert (b["ts"].dt.time() == datetime.min.time()).all()
    assert (b["high"] >= b[["open", "close"]].max_horizontal()).all()
    assert (b["low"] <= b[["open", "close"]].min_horizontal()).all()
    names = sorted(b["symbol"].unique())
    wide = b.pivot(on="symbol", index="ts", values="close").sort("ts").select(names).to_numpy()
    sig = m.signal.pivot(on="industry", index="date", values="signal").sort("date")
    s = sig.select(names).to_numpy()[:-5]
    fwd = wide[5:] / wide[:-5] - 1
    excess = fwd - fwd.mean(axis=1, keepdims=True)

    def ranks(a):
        return a.argsort(axis=1).argsort(axis=1).astype(float)

    rs, re_ = ranks(s), ranks(excess)
    rs -= rs.mean(axis=1, keepdims=True)
    re_ -= re_.mean(axis=1, keepdims=True)
    ics = (rs * re_).sum(axis=1) / np.sqrt((rs**2).sum(axis=1) * (re_**2).sum(axis=1))
    assert 0.2 < float(np.nanmean(ics)) < 0.45


def test_series_pipeline_learns_the_planted_signal_and_refuses_constituent_stages(
    tmp_path, capsys
):
    """data=sample_series (11 series x 20 years, daily): the GRU learns the planted signal
    out of sample; backtest, export, score and report work; DI, timing, factor IC and
    constituent features are refused in one line with exit status 2."""
    args = [
        "experiment=sector_series",
        *_paths(tmp_path),
        *TINY_GRU,
        "trainer.max_epochs=3",
        "model.hidden=16",
        "walkforward.max_folds=3",
        "walkforward.retrain_every=250",
        "walkforward.scheme=rolling",  # 3 years of training per fold keeps the test quick
        "walkforward.train_days=750",
    ]
    cfg = compose_run(args)
    res = _run_pipeline(cfg, with_constituents=False)
    ib = res["industry"].result.frame
    assert ib["industry"].n_unique() == 11 and ib["date"].n_unique() == 5040
    assert ib["up_share"].null_count() == ib.height and (ib["n_active"] == 1).all()
    assert "daily bars, 1 per day, 7 features" in res["plan"]
    m = res["train"].metrics
    assert m["hparams"]["features"]["features"] == [
        "open_rel",
        "high_rel",
        "low_rel",
        "close_rel",
        "bar_ret",
        "log_volume_rel",
        "log_amount_rel",
    ]
    assert m["oos_rank_ic"]["n_dates"] >= 500
    assert m["oos_rank_ic"]["mean"] > 0.1  # planted oracle IC ~0.3
    assert m["oos_rank_ic"]["t_newey_west"] > 3
    sc = res["score"].score
    assert sc.table.height == 11 and len(sc.holdings) == 3
    bt = res["backtest"].summary
    assert bt["ic"]["rank_ic"]["mean"] > 0.1
    markdown = res["report"].markdown.read_text()
    assert cfg.report.di_name not in markdown  # no DI without constituents
    assert cfg.report.gru_name in markdown

    capsys.readouterr()  # training's own output
    for cmd, words in (
        ("baseline", "the diffusion-index baseline"),
        ("timing", "micro-cap timing"),
        ("factor-ic", "the factor IC monitor"),
    ):
        assert main([cmd, *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert f"ConfigError: {words}" in err[0]
        assert "needs constituent stock bars" in err[0]
    with pytest.raises(ConfigError, match=r"\['up_share'\] need constituent stocks"):
        FeatureConfig(names=("close_rel", "up_share")).spec(0, A_SHARE, series=True)


def test_users_industry_series_csv_with_adjusted_closes(tmp_path):
    """A user's sector-ETF CSV (ticker, Date, OHLC, Adj Close, Volume) as industry series:
    `adj_close` is honoured (returns follow it across a dividend), no classification is
    asked for, and the bars become industry bars as they are."""
    from rotation_dl.data.calendar import trading_days

    days = trading_days(date(2021, 1, 4), 30, "XNYS")  # MLK day is no trading day
    rows = []
    for t, tick in enumerate(("XLE", "XLK", "XLF")):
        for k, d in enumerate(days):
            raw = 50.0 + t + 0.1 * k - (2.0 if k >= 15 else 0.0)  # a 2.00 payout on day 15
            before = 50.0 + t + 0.1 * 14  # the last close before the ex-date
            adj = raw * ((1 - 2.0 / before) if k < 15 else 1.0)  # Yahoo-style adjusted close
            rows.append((tick, d.isoformat(), raw, raw + 0.5, raw - 0.5, raw, adj, 1e6 + k))
    df = pl.DataFrame(
        rows,
        schema=["ticker", "Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"],
        orient="row",
    )
    path = write(df, tmp_path / "etfs.csv")
    mapping = (
        "{symbol: ticker, ts: Date, open: Open, high: High, low: Low, close: Close, "
        "adj_close: 'Adj Close', volume: Volume}"
    )
    cfg = compose_run(
        [
            "data=industry_series",
            f"data.bars={path}",
            "market=us",
            f"data.mapping.columns={mapping}",
            *_paths(tmp_path),
        ]
    )
    from rotation_dl.stages import industry, ingest

    rep = ingest.ingest(cfg).report
    assert rep.frequency == "daily" and rep.rows_added == 90
    ib = industry.industry_bars(cfg).result.frame.sort("industry", "ts")
    assert sorted(ib["industry"].unique()) == ["XLE", "XLF", "XLK"]
    xle = ib.filter(pl.col("industry") == "XLE")
    # day 15: the raw close falls by the 2.00 payout; adjusted, it rises by 0.1
    adj = df.filter(pl.col("ticker") == "XLE")["Adj Close"].to_numpy()
    expected = adj[1:] / adj[:-1] - 1
    assert np.allclose(xle["ret"].to_numpy()[1:], expected, atol=1e-12)
    assert xle["ret"].to_numpy()[15] > 0


# ---- daily stock bars into the GRU ------------------------------------------------------------


def test_daily_stock_bars_train_the_gru_end_to_end(tmp_path):
    """Daily stock bars (the sample market at one bar a day) -> daily industry bars -> the
    whole pipeline, constituent stages included; the model's spec says daily."""
    args = [
        *_paths(tmp_path),
        *TINY_GRU,
        "data.sample.bar_minutes=0",
        "data.sample.n_industries=6",
        "data.sample.n_stocks=60",
        "data.sample.n_days=160",
        "walkforward.min_train_days=60",
        "walkforward.val_days=15",
        "walkforward.retrain_every=20",
        "timing.universe_size=20",
        "portfolio.k=2",
        "portfolio.buffer=3",
        "baseline.portfolio.k=2",
    ]
    res = _run_pipeline(compose_run(args), with_constituents=True)
    assert res["ingest"].report.frequency == "daily"
    ib = res["industry"].result.frame
    assert res["industry"].result.bar_minutes == 0
    assert ib.group_by("industry", "date").len()["len"].max() == 1
    assert ib["n_active"].max() > 1 and ib["up_share"].drop_nulls().len() > 0
    assert "daily bars, 1 per day, 9 features" in res["plan"]
    meta = res["train"].metrics["hparams"]["features"]
    assert meta["bar_minutes"] == 0
    assert res["score"].score.table.height == 6
    assert res["report"].html.exists()


def test_industry_bars_from_a_daily_store_match_a_direct_computation(tmp_path):
    """Daily industry return = equal-weight mean of constituents' close-to-close returns;
    vendor daily files with pre_close are adjusted through it (a 10:1 split is no return)."""
    days = [date(2025, 1, 2), date(2025, 1, 3), date(2025, 1, 6), date(2025, 1, 7)]
    a = [10.0, 10.5, 1.1, 1.0]  # split 10:1 before day 3: true return +4.76%
    b = [20.0, 19.0, 19.0, 19.95]
    rows = []
    for k, d in enumerate(days):
        pre_a = None if k == 0 else (1.05 if k == 2 else a[k - 1])
        pre_b = None if k == 0 else b[k - 1]
        rows.append(("600000", d, a[k], a[k], a[k], a[k], 1e5, pre_a))
        rows.append(("600004", d, b[k], b[k], b[k], b[k], 1e5, pre_b))
    df = pl.DataFrame(
        rows,
        schema=["code", "date", "open", "high", "low", "close", "vol", "pre_close"],
        orient="row",
    )
    bars = write(df, tmp_path / "daily.parquet")
    cls = write(
        pl.DataFrame({"symbol": ["600000", "600004"], "industry": ["Banks", "Banks"]}),
        tmp_path / "cls.csv",
    )
    cfg = compose_run(
        [
            "data=parquet",
            f"data.bars={bars}",
            f"data.classification={cls}",
            "data.mapping.columns={symbol: code, ts: date, volume: vol}",
            *_paths(tmp_path),
        ]
    )
    from rotation_dl.stages import industry, ingest

    ingest.ingest(cfg)
    ib = industry.industry_bars(cfg).result.frame.sort("ts")
    ra = [a[1] / a[0] - 1, 1.1 / 1.05 - 1, a[3] / a[2] - 1]
    rb = [b[k + 1] / b[k] - 1 for k in range(3)]
    expected = [(x + y) / 2 for x, y in zip(ra, rb, strict=True)]
    assert np.allclose(ib["ret"].to_numpy()[1:], expected, atol=1e-12)
    assert ib["ts"].dt.time().eq(datetime.min.time()).all()


# ---- daily detection, explicit bar size -------------------------------------------------------


def _one_bar_a_day(stamp: str) -> pl.DataFrame:
    days = [date(2025, 1, 2), date(2025, 1, 3), date(2025, 1, 6)]
    return pl.DataFrame(
        {
            "symbol": ["600000.SH"] * 3,
            "ts": [datetime.fromisoformat(f"{d}T{stamp}") for d in days],
            "open": [10.0, 10.1, 10.2],
            "high": [10.3, 10.4, 10.5],
            "low": [9.9, 10.0, 10.1],
            "close": [10.1, 10.2, 10.3],
            "volume": [1e5] * 3,
            "amount": [1e6] * 3,
        }
    )


def test_one_bar_per_day_with_a_time_of_day_is_daily(tmp_path):
    """A close-stamped daily file (15:00) is daily data, not an undetectable bar size."""
    path = write(_one_bar_a_day("15:00:00"), tmp_path / "d.parquet")
    rep = ingest_bars(path, tmp_path / "store", session=A_SHARE, calendar=None)
    assert rep.frequency == "daily" and rep.rows_added == 3


def test_bar_size_can_be_set_explicitly(tmp_path):
    path = write(_one_bar_a_day("15:00:00"), tmp_path / "d.parquet")
    rep = ingest_bars(path, tmp_path / "s1", session=A_SHARE, calendar=None, bar_size=0)
    assert rep.frequency == "daily"
    with pytest.raises(BarSizeError, match="data.bar_size says 30-min bars"):
        ingest_bars(path, tmp_path / "s1", session=A_SHARE, calendar=None, bar_size=30)
    assert compose_run(["data.bar_size=daily"]).data.bar_minutes == 0
    assert compose_run(["data.bar_size=30"]).data.bar_minutes == 30
    with pytest.raises(ConfigError, match="data.bar_size=0"):
        compose_run(["data.bar_size=0"])


def test_daily_file_into_an_intraday_store_is_refused(tmp_path):
    from conftest import day_bars

    store = tmp_path / "store"
    ingest_bars(
        write(day_bars(day="2025-01-02"), tmp_path / "a.parquet"),
        store,
        session=A_SHARE,
        calendar=None,
    )
    daily = _one_bar_a_day("15:00:00").filter(pl.col("ts").dt.date() > date(2025, 1, 2))
    with pytest.raises(BarSizeError, match="one bar per symbol and day"):
        ingest_bars(write(daily, tmp_path / "b.parquet"), store, session=A_SHARE, calendar=None)


# ---- other markets, short histories -----------------------------------------------------------


def test_us_market_intraday_30_minute_pipeline(tmp_path):
    """market=us on 30-minute stock bars: NYSE session (13 bars), calendar, no price limits;
    ingest -> industry bars -> train -> export -> score."""
    from rotation_dl.stages import export, industry, ingest, score, train

    cfg = compose_run(
        [
            "market=us",
            *_paths(tmp_path),
            *TINY_GRU,
            "data.sample.bar_minutes=30",
            "data.sample.n_industries=4",
            "data.sample.n_stocks=32",
            "data.sample.n_days=70",
            "data.sample.start=2024-06-03",
            "features.window=4",
            "walkforward.min_train_days=25",
            "walkforward.val_days=8",
            "walkforward.retrain_every=10",
        ]
    )
    assert cfg.trading_session() == Session.from_strings([["09:30", "16:00"]])
    ingest.ingest(cfg)
    ib = industry.industry_bars(cfg).result.frame
    assert ib.group_by("date").len()["len"].unique().to_list() == [4 * 13]
    assert date(2024, 7, 4) not in set(ib["date"].to_list())  # NYSE holiday
    assert ib["ts"].dt.time().max() == datetime.strptime("16:00", "%H:%M").time()
    res = train.train(cfg)
    assert res.metrics["hparams"]["features"]["bar_minutes"] == 30
    export.export(cfg)
    sc = score.score(cfg).score
    assert sc.table.height == 4


def test_one_minute_100_day_market_with_walkforward_short(tmp_path):
    """A 100-day 1-minute stock market runs the whole pipeline with walkforward=short, and
    the plan printed before training shows 3 folds and 25 labelled out-of-sample dates."""
    args = [
        *_paths(tmp_path),
        *TINY_GRU,
        "walkforward=short",
        "features.window=2",  # 480-step sequences keep the test fast; the preset uses 10
        "data.sample.bar_minutes=1",
        "data.sample.n_industries=4",
        "data.sample.n_stocks=24",
        "data.sample.n_days=100",
        "trainer.max_epochs=1",
        "timing.universe_size=10",
        "portfolio.k=2",
        "portfolio.buffer=3",
        "baseline.portfolio.k=2",
    ]
    res = _run_pipeline(compose_run(args), with_constituents=True)
    assert res["industry"].result.bar_minutes == 1
    assert "240 per day" in res["plan"]
    # window 2: warm-up 2 + 20 // 4 = 7 days, first test day 7 + 35 + 5 + 10 + 5 = 62
    assert "4 fold(s)" in res["plan"] and "38 out-of-sample dates" in res["plan"]
    m = res["train"].metrics
    assert m["oos_rank_ic"]["n_dates"] == 38 - 5  # the last 5 days have no 5-day label
    assert res["report"].html.exists()


def test_walkforward_short_fits_100_days_and_too_short_names_the_keys():
    cfg = compose_run(["walkforward=short"])
    wf = cfg.walkforward
    warm = cfg.features.window + cfg.features.volume_window // 4
    folds = walk_forward_folds(
        100,
        warmup=warm,
        min_train_days=wf.min_train_days,
        val_days=wf.val_days,
        retrain_every=wf.retrain_every,
        gap=wf.gap,
    )
    assert len(folds) == 3 and folds[0].test[0] == 70 and folds[-1].test[1] == 100
    with pytest.raises(ConfigError) as err:
        walk_forward_folds(60, warmup=warm, min_train_days=35, val_days=10, gap=5)
    msg = str(err.value)
    assert "at least 71 trading days" in msg
    for key in ("walkforward.min_train_days", "walkforward.val_days", "features.window"):
        assert key in msg
    assert "walkforward=short" in msg


def test_plan_command_prints_folds_and_warns_on_few_dates(tmp_path, capsys):
    args = [
        f"paths.output_dir={tmp_path / 'o'}",
        "data.sample.n_industries=4",
        "data.sample.n_stocks=24",
        "data.sample.n_days=60",
        "features.window=4",
        "walkforward.min_train_days=25",
        "walkforward.val_days=5",
        "walkforward.retrain_every=5",
    ]
    assert main(["plan", *args]) == 0
    out = capsys.readouterr().out
    assert "walk-forward plan:" in out and "fold" in out
    # warm-up 4 + 5, first test day 9 + 25 + 5 + 5 + 5 = 49: 11 test days, 6 labelled
    assert "warning: only 6 labelled out-of-sample date(s)" in out
    assert not (tmp_path / "o" / "factor_panel.parquet").exists()
