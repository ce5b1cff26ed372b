"""A user's own files: time zones, trading calendar and units are checked over the whole input
before anything is stored (fixtures made here, nothing from shared data)."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from conftest import REPO, day_bars, split_daily_market, write

from rotation_dl.data.ingest import ingest_bars
from rotation_dl.data.readers import ColumnMapping
from rotation_dl.data.store import scan_store
from rotation_dl.data.validate import IngestPolicy
from rotation_dl.errors import NonTradingDayError, UnitsError
from rotation_dl.session import A_SHARE

TZ = "Asia/Shanghai"


def _ingest(path, store, **kw):
    return ingest_bars(path, store, session=A_SHARE, timezone=TZ, **kw)


def test_offset_strings_are_converted_to_market_time(tmp_path):
    """+08:00, Z (UTC) and -05:00 stamps of the same instants land on the same local bars."""
    local = day_bars(["600000.SH"], day="2024-01-02")
    fmt = "%Y-%m-%dT%H:%M:%S"
    variants = {
        "plus8": pl.col("ts").dt.strftime(fmt) + "+08:00",
        "utc": (pl.col("ts") - pl.duration(hours=8)).dt.strftime(fmt) + "Z",
        "ny": (pl.col("ts") - pl.duration(hours=13)).dt.strftime(fmt) + "-05:00",
    }
    for name, expr in variants.items():
        csv = write(local.with_columns(expr.alias("ts")), tmp_path / name / "bars.csv")
        rep = _ingest(csv, tmp_path / f"store_{name}")
        got = scan_store(tmp_path / f"store_{name}").collect().sort("ts")
        assert rep.rows_added == 16 and got["ts"].to_list() == local["ts"].to_list(), name


def test_zoned_parquet_timestamps_are_converted(tmp_path):
    local = day_bars(["600000.SH"], day="2024-01-02")
    zoned = local.with_columns(
        pl.col("ts").dt.replace_time_zone(TZ).dt.convert_time_zone("UTC").alias("ts")
    )
    assert zoned.schema["ts"].time_zone == "UTC"
    _ingest(write(zoned, tmp_path / "bars.parquet"), tmp_path / "store")
    got = scan_store(tmp_path / "store").collect().sort("ts")
    assert got["ts"].to_list() == local["ts"].to_list()


def test_weekend_and_future_dates_refused_or_dropped(tmp_path):
    frames = [day_bars(["600000.SH"], day=d) for d in ("2024-01-05", "2024-01-06", "2024-01-08")]
    path = write(pl.concat(frames), tmp_path / "bars.parquet")
    with pytest.raises(NonTradingDayError) as err:
        _ingest(path, tmp_path / "store")
    assert "16 rows fall on 1 date(s) that cannot be trading days" in str(err.value)
    assert "2024-01-06 is a weekend" in str(err.value)
    assert not (tmp_path / "store").exists()
    rep = _ingest(path, tmp_path / "store", policy=IngestPolicy(on_non_trading_day="drop"))
    assert rep.rows_added == 32 and rep.dropped["non_trading_day_rows"] == 16
    with pytest.raises(NonTradingDayError, match="32 rows fall on 2 date"):
        _ingest(path, tmp_path / "s2", today=date(2024, 1, 7))


def test_exchange_holidays_from_the_calendar(tmp_path):
    pytest.importorskip("exchange_calendars", reason="the `calendars` extra is not installed")
    path = write(
        pl.concat([day_bars(["600000.SH"], day=d) for d in ("2024-02-08", "2024-02-09")]),
        tmp_path / "bars.parquet",
    )
    _ingest(path, tmp_path / "loose")  # no calendar: weekdays are fine
    with pytest.raises(NonTradingDayError, match="2024-02-09 is not a XSHG trading day"):
        _ingest(path, tmp_path / "store", calendar="XSHG")


@pytest.mark.parametrize(
    "volume_scale, amount_scale, fix",
    [
        (0.01, 1.0, "data.mapping.volume_multiplier=100"),  # volume in lots
        (1.0, 1e-4, "data.mapping.amount_multiplier=10000"),  # amount in 10,000s
    ],
)
def test_units_are_checked_not_assumed(tmp_path, volume_scale, amount_scale, fix):
    bars = day_bars(["600000.SH", "600001.SH"]).with_columns(
        pl.col("volume") * volume_scale, pl.col("amount") * amount_scale
    )
    path = write(bars, tmp_path / "bars.parquet")
    with pytest.raises(UnitsError) as err:
        _ingest(path, tmp_path / "store")
    assert fix in str(err.value) and "bars.parquet" in str(err.value)
    assert not (tmp_path / "store").exists()
    mapping = ColumnMapping(volume_multiplier=1 / volume_scale, amount_multiplier=1 / amount_scale)
    assert _ingest(path, tmp_path / "store", mapping=mapping).rows_added == 32


def test_units_found_past_an_untraded_head(tmp_path, monkeypatch):
    """The units median samples a file's first rows; when none of them traded (a suspended
    stock sorted first), the whole file is searched instead of skipping the check."""
    import rotation_dl.data.profile as profile

    monkeypatch.setattr(profile, "UNITS_SAMPLE", 16)  # exactly the first stock's bars
    quiet = day_bars(["600000.SH"]).with_columns(pl.lit(0.0).alias("volume"))
    lots = day_bars(["600001.SH"]).with_columns(pl.col("volume") * 0.01)
    path = write(pl.concat([quiet, lots]), tmp_path / "bars.parquet")
    with pytest.raises(UnitsError, match="volume_multiplier=100"):
        _ingest(path, tmp_path / "store")


def test_missing_amount_is_derived_and_said_once(tmp_path):
    path = write(day_bars(["600000.SH"]).drop("amount"), tmp_path / "bars.parquet")
    rep = _ingest(path, tmp_path / "store")
    assert rep.notes == [
        "amount derived as close x volume for 1 file(s) without an 'amount' column"
    ]
    assert "note: amount derived" in rep.summary()


def test_cli_user_data_errors_are_one_line_and_leave_nothing(tmp_path):
    import subprocess
    import sys

    bars = day_bars(["600000.SH"], day="2024-01-06")  # a Saturday
    raw = write(bars, tmp_path / "raw" / "bars.parquet")
    cls = write(pl.DataFrame({"symbol": ["600000"], "industry": ["Banks"]}), tmp_path / "c.csv")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "rotation_dl.cli", "ingest", "data=parquet",
         f"data.bars={raw}", f"data.classification={cls}", f"paths.output_dir={out}"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "NonTradingDayError" in err[0] and "2024-01-06 is a weekend" in err[0]
    assert not out.exists(), "a failed first ingest leaves no outputs/<run>/ folder"


def test_a_stray_bar_is_outside_the_session_not_a_bar_size(tmp_path):
    from datetime import datetime

    from rotation_dl.errors import SessionError

    bars = day_bars(["600000.SH"], day="2024-01-02")
    stray = bars.head(1).with_columns(pl.lit(datetime(2024, 1, 2, 11, 31)).alias("ts"))
    path = write(pl.concat([bars, stray]).sort("ts"), tmp_path / "bars.parquet")
    with pytest.raises(SessionError, match="outside the trading session 09:30-11:30"):
        _ingest(path, tmp_path / "store")


def test_chunk_counts_say_at_least_and_which_days(tmp_path):
    from rotation_dl.errors import ValueRangeError

    days = ["2024-01-02", "2024-01-03", "2024-01-04"]
    frames = [day_bars(["600000.SH"], day=d) for d in days]
    frames[2] = frames[2].with_columns(pl.lit(-1.0).alias("volume"))  # bad in the 2nd chunk
    path = write(pl.concat(frames), tmp_path / "bars.parquet")
    with pytest.raises(ValueRangeError) as err:
        _ingest(path, tmp_path / "store", chunk_days=2)
    msg = str(err.value)
    assert "at least 16 rows" in msg and "counted in days 2024-01-04..2024-01-04" in msg
    with pytest.raises(ValueRangeError) as whole:
        _ingest(path, tmp_path / "store", chunk_days=10)  # one chunk: an exact count
    assert "at least" not in str(whole.value) and "16 rows" in str(whole.value)


def test_classification_errors_name_the_file(tmp_path):
    import subprocess
    import sys

    raw = write(day_bars(["600000.SH"], day="2024-01-02"), tmp_path / "raw" / "bars.parquet")
    cls = write(
        pl.DataFrame({"symbol": ["600000", "600000"], "industry": ["Banks", "Energy"]}),
        tmp_path / "my_industries.csv",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "rotation_dl.cli", "industry-bars", "data=parquet",
         f"data.bars={raw}", f"data.classification={cls}", f"paths.output_dir={tmp_path / 'o'}"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()[-1]
    assert "my_industries.csv" in err and "in another industry" in err
    assert "600000.SH in Banks (no end) and in Energy (no start)" in err


def _split_daily(tmp_path):
    """Two 2:1 splits in unadjusted daily bars (conftest.split_daily_market), as files."""
    daily, cls, split = split_daily_market(60, 5, (30, 40))
    bars = write(daily.rename({"date": "ts"}), tmp_path / "daily.parquet")
    return bars, write(cls, tmp_path / "cls.parquet"), split


@pytest.mark.parametrize("policy", ["fail", "warn", "drop"])
def test_unadjusted_daily_bars_without_factors_fail_warn_or_drop_the_gaps(tmp_path, policy):
    """Two splits and no factors: fail refuses; warn goes on with the gaps and a caveat; drop
    leaves the two overnight moves out of the industry returns, with the count and a caveat in
    every summary."""
    import json

    from rotation_dl.config import compose_run
    from rotation_dl.errors import AdjustmentError
    from rotation_dl.stages.evaluate import baseline
    from rotation_dl.stages.industry import industry_bars

    bars, cls, split = _split_daily(tmp_path)
    cfg = compose_run([
        "data=parquet", f"data.bars={bars}", f"data.classification={cls}",
        f"paths.output_dir={tmp_path / 'o'}", f"data.on_unadjusted={policy}",
        "baseline.k=5", "backtest.horizon=2",
    ])  # fmt: skip
    if policy == "fail":
        with pytest.raises(AdjustmentError, match="data.on_unadjusted"):
            industry_bars(cfg)
        return
    ib = industry_bars(cfg).result.frame
    summary = baseline(cfg).summary
    caveats = next(iter(summary["variants"].values())).get("data_caveats") or summary.get(
        "data_caveats"
    )
    report = json.loads((tmp_path / "o" / "gaps" / "gaps.json").read_text())
    assert report["stock_days"] == 2 and report["policy"] == policy
    assert caveats and f"data.on_unadjusted={policy}" in caveats[0] and "2 stock-day" in caveats[0]
    worst = ib["ret_ew"].min()
    if policy == "drop":  # no industry day carries a halving stock's -50%
        assert worst > -0.1
        factors = pl.read_parquet(tmp_path / "o" / "gaps" / "gap_factors.parquet")
        assert sorted(set(factors.filter(pl.col("factor") != 1.0)["symbol"])) == split
    else:
        assert worst < -0.05, worst  # the gap is in the returns, and the caveat says so
