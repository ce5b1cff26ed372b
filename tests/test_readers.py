"""Readers: symbol normalisation, column mapping, units, CSV/parquet, classification."""

from __future__ import annotations

from datetime import date, datetime

import polars as pl
import pytest
from conftest import day_bars, write

from rotation_dl.data.ingest import ingest_bars
from rotation_dl.data.readers import (
    ColumnMapping,
    normalize_symbol,
    read_adjustment,
    read_classification,
)
from rotation_dl.data.store import read_manifest, scan_store
from rotation_dl.errors import SchemaError, SymbolFormatError, ValueRangeError
from rotation_dl.session import A_SHARE


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("600000", "600000.SH"),
        ("000001", "000001.SZ"),
        ("300750", "300750.SZ"),
        ("688981", "688981.SH"),
        ("830799", "830799.BJ"),
        ("920001", "920001.BJ"),
        ("sh600000", "600000.SH"),
        ("SZ.000001", "000001.SZ"),
        (" 600000.sh ", "600000.SH"),
        ("600000.XSHG", "600000.SH"),
        ("000001.XSHE", "000001.SZ"),
        ("SH600000", "600000.SH"),
        ("SH#600000", "600000.SH"),
        ("sh#600000", "600000.SH"),
        ("SZ#000001", "000001.SZ"),
        ("600000.sh", "600000.SH"),
        ("BJ#830799", "830799.BJ"),
        ("830799.BJ", "830799.BJ"),
        ("430047", "430047.BJ"),
        ("AAPL", "AAPL"),
    ],
)
def test_normalize_symbol(raw, expected):
    out = pl.select(normalize_symbol(pl.lit(raw))).item()
    assert out == expected


def test_mapping_renames_units_and_codes(tmp_path):
    df = (
        day_bars(["600000.SH"])
        .with_columns(pl.col("symbol").str.slice(0, 6), (pl.col("volume") / 100).alias("vol_lots"))
        .drop("volume")
        .rename({"symbol": "code", "ts": "datetime", "amount": "turnover"})
    )
    path = write(df, tmp_path / "raw.csv")
    mapping = ColumnMapping(
        columns={"symbol": "code", "ts": "datetime", "volume": "vol_lots", "amount": "turnover"},
        volume_multiplier=100,
    )
    ingest_bars(path, tmp_path / "store", mapping, session=A_SHARE)
    out = scan_store(tmp_path / "store").collect()
    assert out["symbol"].unique().to_list() == ["600000.SH"]
    assert out["volume"].to_list() == [1000.0] * 16
    assert out["ts"].min() == datetime(2025, 1, 2, 9, 45)


def test_csv_keeps_leading_zeros(tmp_path):
    df = day_bars(["000001.SZ"]).with_columns(pl.col("symbol").str.slice(0, 6))
    path = write(df, tmp_path / "raw.csv")
    ingest_bars(path, tmp_path / "store", session=A_SHARE)
    assert scan_store(tmp_path / "store").collect()["symbol"][0] == "000001.SZ"


def test_daily_bars_with_code_date_and_lots(tmp_path):
    df = pl.DataFrame(
        {
            "code": ["600000", "600000", "000001"],
            "date": [datetime(2025, 1, 2), datetime(2025, 1, 3), datetime(2025, 1, 2)],
            "open": [10.0, 10.2, 5.0],
            "high": [10.5, 10.4, 5.1],
            "low": [9.9, 10.0, 4.9],
            "close": [10.2, 10.3, 5.0],
            "volume": [12.5, 10.0, 3.0],
        }
    )
    path = write(df, tmp_path / "d.parquet")
    mapping = ColumnMapping(columns={"symbol": "code", "ts": "date"}, volume_multiplier=100)
    report = ingest_bars(path, tmp_path / "store", mapping, session=A_SHARE)
    assert report.frequency == "daily"
    man = read_manifest(tmp_path / "store")
    assert man.partition == "month" and man.bar_minutes == 0
    out = scan_store(tmp_path / "store").collect().sort("symbol", "date")
    assert out.columns[:2] == ["symbol", "date"] and out["date"].dtype == pl.Date
    assert out.filter(pl.col("symbol") == "600000.SH")["volume"].to_list() == [1250.0, 1000.0]
    assert out["amount"][0] == pytest.approx(5.0 * 300.0)  # close x volume when no amount


def test_classification_history_start_only(tmp_path):
    path = write(
        pl.DataFrame(
            {
                "stock_code": ["600000", "600000", "000001"],
                "include_date": ["2020-01-01", "2021-07-30", "2019-01-01"],
                "l1_name": ["Banks", "NonBank", "Banks"],
            }
        ),
        tmp_path / "cls.csv",
    )
    cls = read_classification(
        path, columns={"symbol": "stock_code", "industry": "l1_name", "start": "include_date"}
    )
    row = cls.filter(pl.col("symbol") == "600000.SH").sort("start")
    assert row["end"].to_list() == [date(2021, 7, 29), None]
    assert set(cls["symbol"]) == {"600000.SH", "000001.SZ"}


def test_classification_missing_industry_policy(tmp_path):
    path = write(
        pl.DataFrame({"symbol": ["600000", "600001"], "industry": ["Banks", None]}),
        tmp_path / "cls.parquet",
    )
    with pytest.raises(SchemaError, match="1 row has no industry"):
        read_classification(path)
    assert read_classification(path, on_missing_industry="drop").height == 1


def test_classification_missing_column(tmp_path):
    path = write(pl.DataFrame({"symbol": ["600000"]}), tmp_path / "cls.parquet")
    with pytest.raises(SchemaError, match="industry"):
        read_classification(path)


def test_adjustment_factor_must_be_positive(tmp_path):
    path = write(
        pl.DataFrame({"symbol": ["600000"], "date": [date(2025, 1, 2)], "factor": [0.0]}),
        tmp_path / "adj.parquet",
    )
    with pytest.raises(ValueRangeError, match="factor"):
        read_adjustment(path)


def test_adjustment_read_for_a_date_range_adjusts_those_days_as_the_whole_file(tmp_path):
    """start/end keep each code's factor in force on start and what follows up to end: bars
    of [start, end] come out as adjusted by the whole file."""
    from rotation_dl.industry.aggregate import adjust_bars

    d = [date(2025, 1, day) for day in (2, 3, 6, 7, 8, 9, 10)]
    factors = pl.DataFrame(
        {
            "symbol": ["600000.SH"] * 4 + ["000001"] * 2 + ["SH#600004"],
            "date": [d[0], d[1], d[3], d[6], d[2], d[5], d[4]],
            "factor": [1.0, 1.1, 1.2, 1.3, 2.0, 2.5, 4.0],
        }
    )
    path = write(factors, tmp_path / "adj.parquet")
    bars = pl.DataFrame(
        {
            "symbol": [s for s in ("600000.SH", "000001.SZ", "600004.SH") for _ in d[2:6]],
            "date": d[2:6] * 3,
            **{c: [10.0] * 12 for c in ("open", "high", "low", "close")},
        }
    )
    part = read_adjustment(path, start=d[2], end=d[5])
    assert part.height == 5  # 600000: 1.1 in force, 1.2; 000001: 2.0, 2.5; 600004: 4.0
    assert set(part["symbol"]) == {"600000.SH", "000001.SZ", "600004.SH"}
    whole = adjust_bars(bars.lazy(), read_adjustment(path)).collect()
    assert adjust_bars(bars.lazy(), part).collect().equals(whole)
    assert whole["close"].to_list()[:4] == [11.0, 12.0, 12.0, 12.0]
    # presorted (stocks interleaved in date order, as the store reads them): the same rows
    by_date = bars.sort("date", maintain_order=True)
    fast = adjust_bars(by_date.lazy(), part, presorted=True).collect()
    assert fast.equals(adjust_bars(by_date.lazy(), read_adjustment(path)).collect())
    assert fast.sort("symbol", "date").equals(whole.sort("symbol", "date"))


def test_unplaceable_codes_are_refused_at_ingest_with_count_and_examples(tmp_path):
    good = day_bars(["600000.SH"]).with_columns(pl.lit("SH#600000").alias("symbol"))
    bad = day_bars(["600001.SH", "600002.SH", "600003.SH"]).with_columns(
        pl.col("symbol").replace(
            {"600001.SH": "XX600001", "600002.SH": "6000", "600003.SH": "SZ#1"}
        )
    )
    raw = write(pl.concat([good, bad]), tmp_path / "raw" / "bars.parquet")
    with pytest.raises(SymbolFormatError) as err:
        ingest_bars(raw, tmp_path / "store", session=A_SHARE)
    msg = str(err.value)
    assert "3 symbols cannot be placed on an A-share exchange" in msg
    assert "['6000', 'SZ#1', 'XX600001']" in msg and "symbol_format=keep" in msg
    assert not (tmp_path / "store").exists()
    kept = ingest_bars(
        raw, tmp_path / "kept", ColumnMapping(symbol_format="keep"), session=A_SHARE
    )
    assert kept.rows_added == 4 * 16
    assert set(scan_store(tmp_path / "kept").collect()["symbol"]) == {
        "SH#600000", "XX600001", "6000", "SZ#1",
    }  # fmt: skip


def test_missing_classification_columns_name_the_key_with_a_guess(tmp_path):
    """Chinese headers: the error names data.classification_columns and the override to type,
    quoted for Hydra; that override then reads the file."""
    df = pl.DataFrame({"股票代码": ["600000", "000001"], "申万一级行业": ["银行", "银行"]})
    path = write(df, tmp_path / "cls.csv")
    with pytest.raises(SchemaError) as err:
        read_classification(path)
    msg = str(err.value)
    assert "data.classification_columns={symbol: '股票代码', industry: '申万一级行业'}" in msg
    assert "\n" not in msg
    cls = read_classification(path, columns={"symbol": "股票代码", "industry": "申万一级行业"})
    assert cls["symbol"].to_list() == ["600000.SH", "000001.SZ"]


def test_overlapping_classification_intervals_are_refused_even_without_trades(tmp_path):
    """Two industries for one stock over overlapping dates: the file contradicts itself,
    whether or not the stock traded then; the stock, the dates and both industries named."""
    df = pl.DataFrame(
        {
            "symbol": ["600000", "600000", "000001"],
            "industry": ["Banks", "Insurance", "Banks"],
            "start": ["2020-01-01", "2021-06-01", None],
            "end": ["2021-07-31", None, None],
        }
    )
    with pytest.raises(SchemaError) as err:
        read_classification(write(df, tmp_path / "cls.csv"))
    msg = str(err.value)
    assert "1 interval overlaps an interval of the same stock in another industry" in msg
    assert "600000.SH in Banks until 2021-07-31 and in Insurance from 2021-06-01" in msg
    fixed = df.with_columns(pl.Series("start", ["2020-01-01", "2021-08-01", None]))
    assert read_classification(write(fixed, tmp_path / "ok.csv")).height == 3
    same = df.with_columns(pl.Series("industry", ["Banks", "Banks", "Banks"]))  # a restatement
    assert read_classification(write(same, tmp_path / "same.csv")).height == 3


def test_a_gbk_csv_is_read_as_gbk_not_as_mojibake(tmp_path):
    """Chinese vendors save CSV as GBK: its headers and names come through intact (a UTF-8
    read would report missing columns in mojibake); bytes neither UTF-8 nor GB18030 are one
    UnreadableFileError naming the encodings tried."""
    from rotation_dl.errors import UnreadableFileError

    text = "股票代码,申万一级行业\n600000,银行\n000001,银行\n600519,食品饮料\n"
    path = tmp_path / "cls.csv"
    path.write_bytes(text.encode("gbk"))
    cls = read_classification(path, columns={"symbol": "股票代码", "industry": "申万一级行业"})
    assert cls["industry"].to_list() == ["银行", "银行", "食品饮料"]
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"symbol,industry\n600000,\xff\xfe\xff\n")
    with pytest.raises(UnreadableFileError, match="neither UTF-8 nor GBK"):
        read_classification(bad)
