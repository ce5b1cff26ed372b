"""The canonical store: idempotent, incremental, partitioned, chunk-independent."""

from __future__ import annotations

import os
from datetime import date

import polars as pl
import pytest
from conftest import day_bars, next_days, write

from rotation_dl.data.ingest import ingest_bars
from rotation_dl.data.store import read_manifest, scan_store, stored_partitions
from rotation_dl.errors import StoreError
from rotation_dl.session import A_SHARE


def _days(tmp_path, days, symbols=("600000.SH", "600001.SH")):
    for d in days:
        write(day_bars(symbols, day=d), tmp_path / "raw" / f"{d}.parquet")
    return tmp_path / "raw"


def test_idempotent_and_incremental(tmp_path):
    days = next_days(6)
    raw = _days(tmp_path, days[:4])
    store = tmp_path / "store"
    first = ingest_bars(raw, store, session=A_SHARE)
    assert first.rows_added == 4 * 2 * 16
    again = ingest_bars(raw, store, session=A_SHARE)
    assert again.rows_added == 0 and again.skipped_files == 4  # unchanged: not even read
    assert again.store_version == first.store_version == 1
    assert again.summary() == (
        "4 file(s), all unchanged since the last ingest: nothing read or added; store version 1"
    )
    touched = sorted(raw.rglob("*.parquet"))[0]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    reread = ingest_bars(raw, store, session=A_SHARE)
    assert reread.skipped_files == 3 and reread.rows_read == 2 * 16
    assert reread.rows_added == 0 and len(reread.partitions_unchanged) == 1  # identical rows
    files_before = {p: p.stat().st_mtime_ns for p in store.rglob("*.parquet")}
    _days(tmp_path, days[4:])
    more = ingest_bars(raw, store, session=A_SHARE)
    assert more.rows_added == 2 * 2 * 16 and len(more.partitions_written) == 2
    for p, mtime in files_before.items():
        assert p.stat().st_mtime_ns == mtime, "unchanged partitions are not rewritten"
    assert stored_partitions(store) == [f"date={d}" for d in days]
    assert scan_store(store).collect().height == 6 * 2 * 16


def test_new_symbols_merge_into_existing_day(tmp_path):
    store = tmp_path / "store"
    ingest_bars(write(day_bars(["600000.SH"]), tmp_path / "a.parquet"), store, session=A_SHARE)
    report = ingest_bars(
        write(day_bars(["600001.SH"]), tmp_path / "b.parquet"), store, session=A_SHARE
    )
    assert report.rows_added == 16
    out = scan_store(store).collect()
    assert (
        out.height == 32 and not out.select(pl.struct("symbol", "ts").is_duplicated().any()).item()
    )


def test_month_partitions_and_range_scan(tmp_path):
    days = next_days(30)
    raw = _days(tmp_path, days, symbols=("600000.SH",))
    store = tmp_path / "store"
    ingest_bars(raw, store, partition="month", session=A_SHARE)
    assert stored_partitions(store) == ["month=2025-01", "month=2025-02"]
    lf = scan_store(store, start=date(2025, 2, 1), end=date(2025, 2, 5))
    got = lf.collect()["ts"].dt.date().unique().sort().to_list()
    assert got == [date(2025, 2, d) for d in (3, 4, 5)]
    with pytest.raises(StoreError):
        ingest_bars(raw, store, partition="date", session=A_SHARE)


@pytest.mark.parametrize("chunk_days", [1, 3, 100])
def test_chunking_does_not_change_the_store(tmp_path, tiny_market, chunk_days):
    raw = write(
        tiny_market.bars.sample(fraction=1.0, seed=1).sort("symbol", "ts"),
        tmp_path / "one_file.parquet",
    )
    store = tmp_path / f"store{chunk_days}"
    ingest_bars(raw, store, chunk_days=chunk_days, session=A_SHARE)
    out = scan_store(store).collect().sort("symbol", "ts")
    expected = tiny_market.bars.filter(pl.col("close") > 0).sort("symbol", "ts")
    assert out.equals(expected)


def test_manifest_records_bar_size(tmp_path, tiny_market):
    ingest_bars(
        write(tiny_market.bars, tmp_path / "b.parquet"), tmp_path / "store", session=A_SHARE
    )
    man = read_manifest(tmp_path / "store")
    assert (man.frequency, man.bar_minutes, man.partition) == ("intraday", 15, "date")


def test_scan_store_without_manifest(tmp_path):
    with pytest.raises(StoreError, match="not a rotation_dl store"):
        scan_store(tmp_path)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_the_vendors_1300_stamp_is_named_and_fixed_in_any_format(tmp_path, suffix):
    """The morning's last bar stamped 13:00 (TongDaXin's quirk) in a parquet or CSV file: the
    SessionError says which key to add, and with it the same file stores the 11:30 bar."""
    from rotation_dl.data.readers import ColumnMapping
    from rotation_dl.errors import SessionError

    days = next_days(2)
    good = pl.concat([day_bars(("600000.SH", "000001.SZ"), d) for d in days])
    t = pl.col("ts").dt.time()
    moved = pl.col("ts").dt.date().cast(pl.Datetime("us")) + pl.duration(hours=13)
    raw = write(
        good.with_columns(pl.when(t == pl.time(11, 30)).then(moved).otherwise("ts").alias("ts")),
        tmp_path / f"raw{suffix}",
    )
    with pytest.raises(SessionError, match=r"add data\.mapping\.morning_close_1300=true"):
        ingest_bars(raw, tmp_path / "s1", session=A_SHARE)
    assert not (tmp_path / "s1" / "_delta_log").exists()
    ingest_bars(raw, tmp_path / "s2", ColumnMapping(morning_close_1300=True), session=A_SHARE)
    stored = scan_store(tmp_path / "s2").select(good.columns).collect().sort("symbol", "ts")
    assert stored.equals(good.sort("symbol", "ts"))


def test_a_true_1300_stray_gets_no_morning_close_hint(tmp_path):
    """A 13:00 stamp on a day that has its 11:30 bar is not the quirk: no hint."""
    from rotation_dl.errors import DataError

    bars = day_bars(("600000.SH",), next_days(1)[0])
    extra = bars.head(1).with_columns(
        (pl.col("ts").dt.date().cast(pl.Datetime("us")) + pl.duration(hours=13)).alias("ts")
    )
    raw = write(pl.concat([bars, extra]), tmp_path / "raw.parquet")
    with pytest.raises(DataError) as err:
        ingest_bars(raw, tmp_path / "s", session=A_SHARE)
    assert "morning_close_1300" not in str(err.value)


def _forward_adjusted(factor_before: dict[str, float], n_days: int = 6) -> pl.DataFrame:
    """Bars whose prices before the last day are scaled by each stock's factor (a forward
    adjustment), with amount as traded: amount / (volume x close) is 1 / factor on those days."""
    days = next_days(n_days)
    frames = []
    for k, day in enumerate(days):
        bars = day_bars(tuple(factor_before), day, price=10.0, volume=1000.0)
        if k < n_days - 1:
            f = pl.col("symbol").replace_strict(factor_before, return_dtype=pl.Float64)
            bars = bars.with_columns(pl.col("open", "high", "low", "close") * f)
        frames.append(bars)
    return pl.concat(frames)


def test_forward_adjusted_prices_pass_the_units_check_on_each_stocks_last_bar(tmp_path):
    """A qfq file: amount / (volume x close) is about 2 over the history but 1 on the last day,
    where the forward factor is 1: stored, with a note that says why."""
    raw = write(_forward_adjusted({"600000.SH": 0.49, "000001.SZ": 0.45}), tmp_path / "q.parquet")
    report = ingest_bars(raw, tmp_path / "s", session=A_SHARE, check_limits=False)
    assert any("forward-adjusted" in n and "q.parquet" in n for n in report.notes)


def test_forward_adjusted_lots_name_the_volume_multiplier_not_adjustment(tmp_path):
    from rotation_dl.data.readers import ColumnMapping
    from rotation_dl.errors import UnitsError

    bars = _forward_adjusted({"600000.SH": 0.49, "000001.SZ": 0.45})
    raw = write(bars.with_columns(pl.col("volume") / 100), tmp_path / "lots.parquet")
    with pytest.raises(UnitsError, match=r"data\.mapping\.volume_multiplier=100\b"):
        ingest_bars(raw, tmp_path / "s", session=A_SHARE, check_limits=False)
    lots = ColumnMapping(volume_multiplier=100)
    ingest_bars(raw, tmp_path / "s", lots, session=A_SHARE, check_limits=False)
    stored = scan_store(tmp_path / "s").collect()
    assert stored["volume"].max() == pytest.approx(1000.0)


def test_adjusted_prices_without_an_unadjusted_day_name_adjustment_and_the_override(tmp_path):
    """Back-adjusted style: every day's ratio is off, by a different amount per stock and no
    power of ten; the error names adjustment and the per-file override, which then stores it."""
    from rotation_dl.errors import UnitsError

    bars = _forward_adjusted({"600000.SH": 3.1, "000001.SZ": 4.7}, n_days=4)
    bars = bars.with_columns(
        pl.col("open", "high", "low", "close")
        * pl.col("symbol").replace_strict({"600000.SH": 3.1, "000001.SZ": 4.7}, default=1.0)
        .pipe(lambda f: pl.when(pl.col("ts").dt.date() == pl.col("ts").dt.date().max())
              .then(f).otherwise(1.0))
    )  # fmt: skip
    raw = write(bars, tmp_path / "hfq.parquet")
    with pytest.raises(UnitsError) as err:
        ingest_bars(raw, tmp_path / "s", session=A_SHARE, check_limits=False)
    msg = str(err.value)
    assert "no power of ten" in msg and "data.units_unchecked=['hfq.parquet']" in msg
    assert "volume_multiplier" not in msg
    assert not list((tmp_path / "s").rglob("*.parquet"))  # refused before anything is kept
    report = ingest_bars(
        raw, tmp_path / "s", session=A_SHARE, check_limits=False, units_unchecked=["hfq.*"]
    )
    assert any("units taken as they are" in n for n in report.notes)


def test_the_settings_key_of_existing_stores_is_unchanged_by_later_defaults():
    """A store ingested before `morning_close_1300` existed keeps its files' settings key, so
    the next ingest does not read every file again (the key of the defaults, pinned)."""
    from rotation_dl.data.ingest import settings_key
    from rotation_dl.data.readers import ColumnMapping
    from rotation_dl.data.validate import IngestPolicy

    key = settings_key(ColumnMapping(), A_SHARE, "Asia/Shanghai", "XSHG", IngestPolicy(), None)
    assert key == "98338c5552c19ee9"
    on = ColumnMapping(morning_close_1300=True)
    assert settings_key(on, A_SHARE, "Asia/Shanghai", "XSHG", IngestPolicy(), None) != key


def test_forward_adjusted_day_files_are_told_by_the_later_files(tmp_path):
    """One file a day: the days before a qfq factor change hold no bar at factor 1, but the
    later days' files are in band, so the whole input reads as forward-adjusted; a power of
    ten in them (lots) is still named."""
    from rotation_dl.errors import UnitsError

    bars = _forward_adjusted({"600000.SH": 0.49, "000001.SZ": 0.45})
    folder = tmp_path / "days"
    for (day,), part in bars.group_by(pl.col("ts").dt.date(), maintain_order=True):
        write(part, folder / f"{day}.parquet")
    report = ingest_bars(folder, tmp_path / "s", session=A_SHARE, check_limits=False)
    assert any("later files are about 1" in n for n in report.notes)
    lots = tmp_path / "lots"
    for (day,), part in bars.with_columns(pl.col("volume") / 100).group_by(
        pl.col("ts").dt.date(), maintain_order=True
    ):
        write(part, lots / f"{day}.parquet")
    with pytest.raises(UnitsError, match="volume_multiplier=100"):
        ingest_bars(lots, tmp_path / "s2", session=A_SHARE, check_limits=False)


def test_kill_between_commit_and_sources_record_does_not_reread(tmp_path, monkeypatch):
    """The files an ingest read are recorded in its commit too: an ingest killed after its
    log entry, before `_sources.json`, leaves a store whose next ingest still knows them."""
    import rotation_dl.data.ingest as ing

    days = next_days(4)
    raw = _days(tmp_path, days[:2])
    store = tmp_path / "store"
    ingest_bars(raw, store, session=A_SHARE)
    _days(tmp_path, days[2:])

    class Killed(BaseException):
        pass

    def die(*a, **k):
        raise Killed

    monkeypatch.setattr(ing, "write_sources", die)
    with pytest.raises(Killed):
        ingest_bars(raw, store, session=A_SHARE)
    monkeypatch.undo()
    sources = ing.read_sources(store)
    assert len(sources) == 4  # two from _sources.json, two from the killed ingest's commit
    again = ingest_bars(raw, store, session=A_SHARE)
    assert again.skipped_files == 4 and again.rows_added == 0 and again.rows_read == 0
    touched = sorted(raw.rglob("*.parquet"))[-1]  # a later version of a file wins
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    assert ingest_bars(raw, store, session=A_SHARE).skipped_files == 3
    assert ingest_bars(raw, store, session=A_SHARE).skipped_files == 4
