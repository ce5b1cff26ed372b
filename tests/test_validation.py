"""Bad input: every case raises a typed error naming file, column, count and an example, and
leaves no store (or an unchanged store) behind."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from conftest import day_bars, write

from rotation_dl.data.ingest import ingest_bars
from rotation_dl.data.readers import ColumnMapping
from rotation_dl.data.store import stored_partitions
from rotation_dl.data.validate import IngestPolicy
from rotation_dl.errors import (
    BarSizeError,
    DataError,
    DuplicateRowsError,
    EmptyInputError,
    SchemaError,
    SessionError,
    UnreadableFileError,
    UnsortedInputError,
    ValueRangeError,
)
from rotation_dl.session import A_SHARE


def _bad(df: pl.DataFrame, tmp_path: Path, name: str = "bars.parquet") -> Path:
    return write(df, tmp_path / "raw" / name)


def _set(df: pl.DataFrame, row: int, **values) -> pl.DataFrame:
    idx = pl.int_range(pl.len())
    return df.with_columns(
        [
            pl.when(idx == row).then(pl.lit(v)).otherwise(pl.col(k)).alias(k)
            for k, v in values.items()
        ]
    )


def _assert_fails(
    path: Path, tmp_path: Path, err: type, column: str | None, count: int | None, **kw
) -> DataError:
    store = tmp_path / "store"
    with pytest.raises(err) as info:
        ingest_bars(path, store, **kw, session=A_SHARE)
    e = info.value
    assert str(path) in str(e) or e.file == str(path)
    if column is not None:
        assert e.column == column and f"'{column}'" in str(e)
    if count is not None:
        assert e.count == count
    assert not store.exists(), "a failed first ingest must leave no store behind"
    return e


BAD_CASES = {
    "nan_close": (lambda df: _set(df, 3, close=float("nan")), ValueRangeError, "close", 1),
    "inf_volume": (lambda df: _set(df, 4, volume=float("inf")), ValueRangeError, "volume", 1),
    "null_open": (lambda df: _set(df, 2, open=None), ValueRangeError, "open", 1),
    "negative_price": (lambda df: _set(df, 5, low=-1.0), ValueRangeError, "low", 1),
    "zero_close": (lambda df: _set(df, 6, close=0.0), ValueRangeError, "close", 1),
    "negative_volume": (lambda df: _set(df, 7, volume=-5.0), ValueRangeError, "volume", 1),
    "negative_amount": (lambda df: _set(df, 7, amount=-5.0), ValueRangeError, "amount", 1),
    "high_below_low": (
        lambda df: _set(df, 1, high=9.0, low=9.5, open=9.2, close=9.2),
        ValueRangeError,
        "high",
        1,
    ),
    "close_above_high": (lambda df: _set(df, 8, close=11.0), ValueRangeError, "close", 1),
    "open_below_low": (lambda df: _set(df, 9, open=9.0), ValueRangeError, "open", 1),
    "duplicate_rows": (lambda df: pl.concat([df, df.slice(3, 2)]), DuplicateRowsError, "ts", 2),
    "unsorted": (lambda df: pl.concat([df.slice(5), df.slice(0, 5)]), UnsortedInputError, "ts", 1),
    "outside_session": (
        lambda df: _set(df, 0, ts=datetime(2025, 1, 2, 12, 0)),
        SessionError,
        "ts",
        1,
    ),
    "before_open": (lambda df: _set(df, 0, ts=datetime(2025, 1, 2, 9, 15)), SessionError, "ts", 1),
    "off_grid": (lambda df: _set(df, 2, ts=datetime(2025, 1, 2, 10, 7)), BarSizeError, "ts", 1),
}


@pytest.mark.parametrize("case", list(BAD_CASES), ids=list(BAD_CASES))
def test_bad_values_raise_typed_errors(case, tmp_path):
    make, err, column, count = BAD_CASES[case]
    path = _bad(make(day_bars(["600000.SH", "600001.SH"])), tmp_path)
    e = _assert_fails(path, tmp_path, err, column, count)
    assert "e.g." in str(e), "error must show an example row"


def test_missing_column(tmp_path):
    path = _bad(day_bars().drop("close"), tmp_path)
    e = _assert_fails(path, tmp_path, SchemaError, None, None)
    assert "close" in str(e) and "missing column" in str(e)


def test_wrong_dtype(tmp_path):
    df = day_bars().with_columns(pl.col("volume").cast(pl.String))
    e = _assert_fails(_bad(df, tmp_path), tmp_path, SchemaError, "volume", None)
    assert "expected a number" in str(e)


def test_unparseable_timestamp_strings(tmp_path):
    df = day_bars().with_columns(pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S"))
    df = _set(df, 3, ts="not a time")
    e = _assert_fails(_bad(df, tmp_path, "bars.csv"), tmp_path, SchemaError, "ts", 1)
    assert "not a time" in str(e)


def test_empty_input_file(tmp_path):
    path = _bad(day_bars().clear(), tmp_path)
    _assert_fails(path, tmp_path, EmptyInputError, None, 0)


def test_empty_directory(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(EmptyInputError, match="no bar files"):
        ingest_bars(tmp_path / "raw", tmp_path / "store", session=A_SHARE)


def test_missing_path(tmp_path):
    with pytest.raises(UnreadableFileError, match="no such"):
        ingest_bars(tmp_path / "nope.parquet", tmp_path / "store", session=A_SHARE)


def test_truncated_parquet(tmp_path):
    path = _bad(day_bars(), tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_fails(path, tmp_path, UnreadableFileError, None, None)


def test_garbage_csv(tmp_path):
    path = tmp_path / "raw" / "bars.csv"
    path.parent.mkdir()
    path.write_bytes(b"\x00\xff\xfe garbage \x00\n\x01\x02")
    with pytest.raises((UnreadableFileError, SchemaError)):
        ingest_bars(path, tmp_path / "store", session=A_SHARE)
    assert not (tmp_path / "store").exists()


def test_mixed_bar_sizes_within_file(tmp_path):
    df = pl.concat(
        [
            day_bars(["600000.SH"], bar_minutes=5),
            day_bars(["600001.SH", "600002.SH"], bar_minutes=15),
        ]
    )
    e = _assert_fails(_bad(df, tmp_path), tmp_path, BarSizeError, "ts", None)
    assert "mixed bar sizes" in str(e)


def test_mixed_bar_sizes_across_files_leave_nothing(tmp_path):
    a = write(day_bars(["600000.SH"], day="2025-01-02"), tmp_path / "raw" / "a.parquet")
    write(day_bars(["600000.SH"], day="2025-01-03", bar_minutes=5), tmp_path / "raw" / "b.parquet")
    with pytest.raises(BarSizeError, match="5-minute bars but earlier input"):
        ingest_bars(a.parent, tmp_path / "store", session=A_SHARE)
    assert not (tmp_path / "store").exists()


def test_bar_size_mismatch_with_store(tmp_path):
    store = tmp_path / "store"
    ingest_bars(write(day_bars(), tmp_path / "a.parquet"), store, session=A_SHARE)
    before = sorted(p.name for p in store.rglob("*"))
    b = write(day_bars(day="2025-01-03", bar_minutes=5), tmp_path / "b.parquet")
    with pytest.raises(BarSizeError):
        ingest_bars(b, store, session=A_SHARE)
    assert sorted(p.name for p in store.rglob("*")) == before


def test_failure_in_later_file_leaves_store_unchanged(tmp_path):
    store = tmp_path / "store"
    ingest_bars(write(day_bars(), tmp_path / "first.parquet"), store, session=A_SHARE)
    good = write(day_bars(day="2025-01-03"), tmp_path / "raw" / "a.parquet")
    write(_set(day_bars(day="2025-01-06"), 2, close=float("nan")), tmp_path / "raw" / "b.parquet")
    with pytest.raises(ValueRangeError):
        ingest_bars(good.parent, store, session=A_SHARE)
    assert stored_partitions(store) == ["date=2025-01-02"]
    assert not list(store.glob(".staging-*"))


def test_zero_price_bars_policy(tmp_path):
    df = _set(
        day_bars(["600000.SH", "600001.SH"]),
        3,
        open=0.0,
        high=0.0,
        low=0.0,
        close=0.0,
        volume=0.0,
        amount=0.0,
    )
    path = _bad(df, tmp_path)
    _assert_fails(
        path, tmp_path, ValueRangeError, "close", 1, policy=IngestPolicy(on_zero_price_bars="fail")
    )
    report = ingest_bars(path, tmp_path / "store", session=A_SHARE)
    assert report.dropped["zero_price_bars"] == 1
    assert report.rows_added == df.height - 1


def test_unsorted_policy_sort(tmp_path):
    df = day_bars(["600000.SH"])
    path = _bad(pl.concat([df.slice(5), df.slice(0, 5)]), tmp_path)
    report = ingest_bars(
        path, tmp_path / "store", policy=IngestPolicy(on_unsorted="sort"), session=A_SHARE
    )
    assert report.rows_added == df.height


def test_start_stamps_without_shift_fall_outside_session(tmp_path):
    df = day_bars().with_columns(pl.col("ts") - pl.duration(minutes=15))
    path = _bad(df, tmp_path)
    e = _assert_fails(path, tmp_path, SessionError, "ts", 2)  # the 09:30 and 13:00 starts
    assert "09:30" in str(e)
    report = ingest_bars(
        path, tmp_path / "store", ColumnMapping(ts_label="start"), session=A_SHARE
    )
    assert report.rows_added == df.height


def test_conflicting_rows_refused_then_replaced(tmp_path):
    store = tmp_path / "store"
    ingest_bars(write(day_bars(), tmp_path / "a.parquet"), store, session=A_SHARE)
    changed = _set(day_bars(), 0, volume=5.0)
    path = write(changed, tmp_path / "b.parquet")
    from rotation_dl.errors import StoreError

    with pytest.raises(StoreError, match="1 rows differ"):
        ingest_bars(path, store, session=A_SHARE)
    ingest_bars(path, store, policy=IngestPolicy(on_conflict="replace"), session=A_SHARE)
    from rotation_dl.data.store import scan_store

    assert scan_store(store).collect()["volume"].min() == 5.0


def test_same_key_different_values_across_files(tmp_path):
    write(day_bars(), tmp_path / "raw" / "a.parquet")
    write(_set(day_bars(), 0, volume=5.0), tmp_path / "raw" / "b.parquet")
    with pytest.raises(DuplicateRowsError, match="several input files"):
        ingest_bars(tmp_path / "raw", tmp_path / "store", session=A_SHARE)
    assert not (tmp_path / "store").exists()
