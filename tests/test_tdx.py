"""TongDaXin files as the client writes them: fixtures are built byte by byte here and every
field is checked; then a whole folder goes through ingest (`data=tdx`)."""

from __future__ import annotations

import struct
import subprocess
import sys
from datetime import date, datetime, time, timedelta

import polars as pl
import pytest
from conftest import REPO

from rotation_dl.data.ingest import ingest_bars
from rotation_dl.data.store import scan_store
from rotation_dl.data.tdx import read_tdx
from rotation_dl.errors import UnreadableFileError
from rotation_dl.session import A_SHARE


def day_record(ymd: int, o: int, h: int, lo: int, c: int, amount: float, volume: int) -> bytes:
    """One 32-byte .day record: prices in 0.01 as uint32, amount float32, volume uint32."""
    return struct.pack("<IIIIIfII", ymd, o, h, lo, c, amount, volume, 0)


def minute_record(d: date, minute: int, o, h, lo, c, amount: float, volume: int) -> bytes:
    """One 32-byte .lc1/.lc5 record: packed date, minutes since midnight, float32 prices."""
    packed = (d.year - 2004) * 2048 + d.month * 100 + d.day
    return struct.pack("<HHfffffII", packed, minute, o, h, lo, c, amount, volume, 0)


def test_day_file_fields(tmp_path):
    path = tmp_path / "sh600000.day"
    path.write_bytes(
        day_record(20240102, 657, 660, 654, 656, 81_234_567.0, 12_345_678)
        + day_record(20240103, 656, 671, 650, 668, 90_000_000.0, 13_500_000)
    )
    assert path.stat().st_size == 64
    f = read_tdx(path)
    assert f.columns == ["symbol", "ts", "open", "high", "low", "close", "volume", "amount"]
    assert f["symbol"].to_list() == ["600000.SH", "600000.SH"]
    assert f["ts"].to_list() == [date(2024, 1, 2), date(2024, 1, 3)]
    assert f.row(0)[2:6] == pytest.approx((6.57, 6.60, 6.54, 6.56))
    assert f["volume"].to_list() == [12_345_678.0, 13_500_000.0]
    assert f["amount"][0] == pytest.approx(81_234_567.0, rel=1e-7)  # float32 on disk


def test_lc1_fields_and_the_1300_stamp(tmp_path):
    d = date(2024, 1, 2)
    recs = [
        minute_record(d, 571, 6.57, 6.58, 6.56, 6.58, 65_800.0, 10_000),  # 09:31
        minute_record(d, 780, 6.60, 6.61, 6.60, 6.61, 66_100.0, 10_000),  # 13:00 = 11:30 bar
        minute_record(d, 781, 6.61, 6.62, 6.61, 6.62, 66_200.0, 10_000),  # 13:01
    ]
    path = tmp_path / "sz000001.lc1"
    path.write_bytes(b"".join(recs))
    f = read_tdx(path)
    assert f["symbol"].unique().to_list() == ["000001.SZ"]
    assert f["ts"].dt.time().to_list() == [time(9, 31), time(11, 30), time(13, 1)]
    assert f["ts"].dt.date().unique().to_list() == [d]
    assert f.row(0)[2:6] == pytest.approx((6.57, 6.58, 6.56, 6.58), rel=1e-6)
    assert f["volume"].to_list() == [10_000.0] * 3


def test_lc5_keeps_its_stamps(tmp_path):
    d = date(2023, 12, 29)
    recs = [minute_record(d, m, 10, 10, 10, 10, 1000.0, 100) for m in (575, 690, 785, 900)]
    path = tmp_path / "bj830799.lc5"
    path.write_bytes(b"".join(recs))
    f = read_tdx(path)
    assert f["symbol"][0] == "830799.BJ"
    assert f["ts"].to_list() == [
        datetime(2023, 12, 29, 9, 35),
        datetime(2023, 12, 29, 11, 30),
        datetime(2023, 12, 29, 13, 5),
        datetime(2023, 12, 29, 15, 0),
    ]


def text_export(rows: list[str], header: str, title: str = "600000 浦发银行 日线 不复权") -> bytes:
    """A text export as the client writes it: GBK, title, header, data, source line."""
    lines = [title, header, *rows, "数据来源:通达信"]
    return ("\r\n".join(lines) + "\r\n").encode("gbk")


DAY_HEADER = "      日期\t    开盘\t    最高\t    最低\t    收盘\t    成交量\t    成交额"


def test_text_day_export(tmp_path):
    path = tmp_path / "SH#600000.txt"
    path.write_bytes(
        text_export(
            [
                "2024/01/02\t6.57\t6.60\t6.54\t6.56\t12345678\t80987654.00",
                "2024/01/03\t6.56\t6.71\t6.50\t6.68\t13500000\t90000000.00",
            ],
            DAY_HEADER,
        )
    )
    assert "浦发银行".encode("gbk") in path.read_bytes()
    f = read_tdx(path)
    assert f.height == 2 and f["symbol"].to_list() == ["600000.SH"] * 2
    assert f["ts"].to_list() == [date(2024, 1, 2), date(2024, 1, 3)]
    assert f.row(1)[2:] == (6.56, 6.71, 6.50, 6.68, 13_500_000.0, 90_000_000.0)


def test_text_minute_export_comma_and_1300(tmp_path):
    header = "日期,时间,开盘,最高,最低,收盘,成交量,成交额"
    path = tmp_path / "SZ#000001.txt"
    path.write_bytes(
        text_export(
            [
                "01/02/2024,0931,9.10,9.12,9.09,9.11,1000,9110",
                "01/02/2024,1300,9.20,9.21,9.19,9.20,1000,9200",
                "01/02/2024,1301,9.20,9.22,9.20,9.21,1000,9210",
            ],
            header,
            "000001 平安银行 1分钟线 不复权",
        )
    )
    f = read_tdx(path)
    assert f["ts"].to_list() == [
        datetime(2024, 1, 2, 9, 31),
        datetime(2024, 1, 2, 11, 30),
        datetime(2024, 1, 2, 13, 1),
    ]
    assert f["close"].to_list() == [9.11, 9.20, 9.21]


def test_bad_tdx_files_are_named(tmp_path):
    cut = tmp_path / "sh600000.day"
    cut.write_bytes(day_record(20240102, 1, 1, 1, 1, 1.0, 1)[:-3])
    with pytest.raises(UnreadableFileError, match="not a whole number of 32-byte records"):
        read_tdx(cut)
    nohead = tmp_path / "SH#600001.txt"
    nohead.write_bytes("hello\r\n1,2,3\r\n".encode("gbk"))
    with pytest.raises(UnreadableFileError, match="no TongDaXin header"):
        read_tdx(nohead)
    garbled = tmp_path / "SH#600002.txt"
    garbled.write_bytes(text_export(["2024/01/02\t6.57\tx\t6.54\t6.56\t1\t6.56"], DAY_HEADER))
    with pytest.raises(UnreadableFileError, match="1 data line"):
        read_tdx(garbled)


def one_minute_day(d: date, price: float, volume: int = 1000, flat: bool = False) -> list[bytes]:
    """A full A-share day of 1-minute records the way the client stamps them (09:31..11:29,
    13:00 for the 11:29-11:30 bar, 13:01..15:00)."""
    minutes = [*range(571, 690), 780, *range(781, 901)]
    out = []
    for k, m in enumerate(minutes):
        p = price if flat else price * (1 + 0.0001 * (k % 7))
        vol = 0 if flat else volume
        out.append(minute_record(d, m, p, p, p, p, p * vol, vol))
    return out


def test_folder_ingest_text_and_binary_with_a_suspension(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    days = [date(2024, 1, 2) + timedelta(days=k) for k in range(3)]  # Tue..Thu
    (folder / "sh600000.lc1").write_bytes(
        b"".join(r for d in days for r in one_minute_day(d, 6.5))
    )
    suspended = [
        r for k, d in enumerate(days) for r in one_minute_day(d, 9.0, flat=k == 1)
    ]  # the middle day is a suspension: flat bars, no volume
    (folder / "sz000001.lc1").write_bytes(b"".join(suspended))
    (folder / "notes.txt").write_text("not a bar file")  # ignored: not named like TDX
    rep = ingest_bars(folder, tmp_path / "store", session=A_SHARE, timezone="Asia/Shanghai")
    assert rep.bar_minutes == 1 and rep.files == 2
    assert rep.dropped["suspended_day_bars"] == 240
    bars = scan_store(tmp_path / "store").collect()
    assert bars.group_by("symbol").len().sort("symbol")["len"].to_list() == [480, 720]
    assert bars["ts"].dt.time().max() == time(15, 0)
    assert bars.filter(pl.col("ts").dt.time() == time(11, 30)).height == 5  # 3 + 2 days


def test_cli_data_tdx(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "SH#600000.txt").write_bytes(
        text_export(
            [
                "2024/01/02\t6.57\t6.60\t6.54\t6.56\t12345678\t80987654.00",
                "2024/01/03\t6.56\t6.71\t6.50\t6.68\t13500000\t90180000.00",
            ],
            DAY_HEADER,
        )
    )
    (folder / "sh600001.day").write_bytes(
        day_record(20240102, 1000, 1010, 990, 1005, 1_005_000.0, 100_000)
        + day_record(20240103, 1005, 1020, 1000, 1010, 1_010_000.0, 100_000)
    )
    cls = tmp_path / "cls.csv"
    pl.DataFrame({"symbol": ["600000", "600001"], "industry": ["Banks", "Banks"]}).write_csv(cls)
    proc = subprocess.run(
        [sys.executable, "-m", "rotation_dl.cli", "ingest", "data=tdx", f"data.bars={folder}",
         f"data.classification={cls}", f"paths.output_dir={tmp_path / 'out'}"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 file(s), 4 rows of daily bars" in proc.stdout
    store = scan_store(tmp_path / "out" / "store").collect().sort("symbol", "date")
    assert store["symbol"].to_list() == ["600000.SH"] * 2 + ["600001.SH"] * 2
    assert store["close"].to_list() == pytest.approx([6.56, 6.68, 10.05, 10.10])
