"""TongDaXin (通达信) files, exactly as the desktop client writes them.

The exchange and code come from the file name: `SH#600000.txt` (newer clients), `SH600000.txt`,
`sh600000.day`, `BJ#830799.txt` -> `600000.SH`, `830799.BJ`.

**Text exports** ("数据导出" -> text file), GBK-encoded::

    600000 浦发银行 日线 前复权                       title: code, name, period, adjustment
          日期      开盘      最高      最低      收盘      成交量      成交额      header
    2024/01/02   6.57   6.60   6.54   6.56   12345678   81234567.00        data (tab or comma)
    数据来源:通达信                                  trailing source line

Minute exports add a `时间` column after the date with the bar end as HHMM (`0931`). The
1-minute export stamps the morning's last bar (11:29-11:30) as 13:00; where a day has a 13:00
bar and no 11:30 bar, that bar becomes 11:30. Dates may be written YYYY/MM/DD, YYYY-MM-DD,
MM/DD/YYYY or YYYYMMDD. Volume and amount are kept in the client's units (the ingest units check
compares amount with volume x price and names the multiplier to set).

**Binary files** (`vipdoc/<ex>/lday/*.day`, `minline/*.lc1`, `fzline/*.lc5`): 32-byte
little-endian records, no header::

    .day   offset 0  uint32  date as YYYYMMDD
                  4  uint32  open  x 100 (price in 0.01)
                  8  uint32  high  x 100
                 12  uint32  low   x 100
                 16  uint32  close x 100
                 20  float32 amount
                 24  uint32  volume
                 28  uint32  reserved
    .lc1/  offset 0  uint16  date: (year - 2004) * 2048 + month * 100 + day
    .lc5          2  uint16  bar end as minutes since midnight (571 = 09:31)
                  4  float32 open
                  8  float32 high
                 12  float32 low
                 16  float32 close
                 20  float32 amount
                 24  uint32  volume
                 28  uint32  reserved

Whole days of flat, zero-volume bars (how the client fills suspensions) are dropped and counted
by ingest validation, like any vendor's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl

from rotation_dl.errors import UnreadableFileError

TDX_TEXT = (".txt",)
TDX_BINARY = (".day", ".lc1", ".lc5")
TDX_SUFFIXES = TDX_TEXT + TDX_BINARY

HEADER = {
    "日期": "date",
    "时间": "time",
    "开盘": "open",
    "最高": "high",
    "最低": "low",
    "收盘": "close",
    "成交量": "volume",
    "成交额": "amount",
}
NAME = re.compile(r"^(?P<ex>sh|sz|bj)#?(?P<code>\d{6})", re.IGNORECASE)
DAY_RECORD = np.dtype(
    [
        ("date", "<u4"),
        ("open", "<u4"),
        ("high", "<u4"),
        ("low", "<u4"),
        ("close", "<u4"),
        ("amount", "<f4"),
        ("volume", "<u4"),
        ("reserved", "<u4"),
    ]
)
MINUTE_RECORD = np.dtype(
    [
        ("date", "<u2"),
        ("minute", "<u2"),
        ("open", "<f4"),
        ("high", "<f4"),
        ("low", "<f4"),
        ("close", "<f4"),
        ("amount", "<f4"),
        ("volume", "<u4"),
        ("reserved", "<u4"),
    ]
)
PRICES = ("open", "high", "low", "close")


def symbol_from_name(path: Path) -> str:
    """`SH#600000.txt` / `sh600000.day` -> `600000.SH`."""
    m = NAME.match(path.stem)
    if m is None:
        raise UnreadableFileError(
            "is not named like a TongDaXin file (SH#600000.txt, sh600000.day): the exchange "
            "and code come from the name",
            file=str(path),
        )
    return f"{m['code']}.{m['ex'].upper()}"


def is_tdx(path: Path) -> bool:
    return path.suffix.lower() in TDX_SUFFIXES and NAME.match(path.stem) is not None


def read_tdx(path: Path) -> pl.DataFrame:
    """A TongDaXin text or binary file -> symbol, ts (Date for daily, Datetime for minutes),
    open, high, low, close, volume, amount."""
    suffix = path.suffix.lower()
    if suffix in TDX_TEXT:
        frame = read_tdx_text(path)
    elif suffix == ".day":
        frame = read_tdx_day(path)
    elif suffix in (".lc1", ".lc5"):
        frame = read_tdx_minutes(path)
    else:
        raise UnreadableFileError("is not a TongDaXin file", file=str(path))
    return morning_close_fix(frame)


def _records(path: Path, dtype: np.dtype) -> np.ndarray:
    data = path.read_bytes()
    if len(data) % dtype.itemsize:
        raise UnreadableFileError(
            f"is {len(data)} bytes, not a whole number of {dtype.itemsize}-byte records "
            "(truncated?)",
            file=str(path),
        )
    return np.frombuffer(data, dtype=dtype)


def read_tdx_day(path: Path) -> pl.DataFrame:
    """`.day` daily records (prices stored in 0.01)."""
    r = _records(path, DAY_RECORD)
    d = r["date"].astype(np.int64)
    frame = pl.DataFrame(
        {
            "y": d // 10000,
            "m": d // 100 % 100,
            "d": d % 100,
            **{c: r[c].astype(np.float64) / 100.0 for c in PRICES},
            "volume": r["volume"].astype(np.float64),
            "amount": r["amount"].astype(np.float64),
        }
    )
    ts = pl.date(pl.col("y"), pl.col("m"), pl.col("d"))
    return _finish(frame.with_columns(ts.alias("ts")), path)


def read_tdx_minutes(path: Path) -> pl.DataFrame:
    """`.lc1` / `.lc5` minute records (float prices, packed dates, bar-end minutes)."""
    r = _records(path, MINUTE_RECORD)
    packed = r["date"].astype(np.int64)
    minute = r["minute"].astype(np.int64)
    frame = pl.DataFrame(
        {
            "y": packed // 2048 + 2004,
            "m": packed % 2048 // 100,
            "d": packed % 2048 % 100,
            "hh": minute // 60,
            "mm": minute % 60,
            **{c: r[c].astype(np.float64) for c in PRICES},
            "volume": r["volume"].astype(np.float64),
            "amount": r["amount"].astype(np.float64),
        }
    )
    ts = pl.datetime(pl.col("y"), pl.col("m"), pl.col("d"), pl.col("hh"), pl.col("mm"))
    return _finish(frame.with_columns(ts.alias("ts")), path)


def _finish(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    return frame.select(
        pl.lit(symbol_from_name(path)).alias("symbol"),
        "ts",
        *PRICES,
        "volume",
        "amount",
    )


DATE_FORMATS = ("%Y/%m/%d", "%Y-%m-%d", "%m/%d/%Y", "%Y%m%d")


def _parse_dates(col: pl.Expr) -> pl.Expr:
    return pl.coalesce([col.str.to_date(f, strict=False) for f in DATE_FORMATS])


def read_tdx_text(path: Path) -> pl.DataFrame:
    """A GBK text export: title, header, data lines, trailing source line."""
    raw = path.read_bytes()
    try:
        text = raw.decode("gbk")
    except UnicodeDecodeError:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UnreadableFileError("is neither GBK nor UTF-8 text", file=str(path)) from exc
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    head = next((i for i, ln in enumerate(lines[:3]) if "日期" in ln), None)
    if head is None:
        raise UnreadableFileError(
            "has no TongDaXin header line (日期 开盘 最高 最低 收盘 成交量 成交额)", file=str(path)
        )
    sep = "," if "," in lines[head] and "\t" not in lines[head] else None
    names = [HEADER.get(h.strip(), h.strip()) for h in _split(lines[head], sep)]
    missing = [c for c in ("date", *PRICES, "volume") if c not in names]
    if missing:
        raise UnreadableFileError(f"header lacks {missing}: {lines[head]!r}", file=str(path))
    rows = [_split(ln, sep) for ln in lines[head + 1 :] if ln[:1].isdigit()]  # drops 数据来源
    rows = [r for r in rows if len(r) == len(names)]
    if not rows:
        raw_frame = pl.DataFrame(schema={n: pl.String for n in names})
    else:
        raw_frame = pl.DataFrame(rows, schema=names, orient="row")
    day = _parse_dates(pl.col("date"))
    if "time" in names:
        hhmm = pl.col("time").str.zfill(4)
        ts = day.cast(pl.Datetime("us")) + pl.duration(
            hours=hhmm.str.slice(0, 2).cast(pl.Int64), minutes=hhmm.str.slice(2, 2).cast(pl.Int64)
        )
    else:
        ts = day
    amount = pl.col("amount") if "amount" in names else pl.lit(None, dtype=pl.String)
    frame = raw_frame.select(
        ts.alias("ts"),
        *(pl.col(c).cast(pl.Float64, strict=False) for c in PRICES),
        pl.col("volume").cast(pl.Float64, strict=False),
        amount.cast(pl.Float64, strict=False).alias("amount"),
    )
    if "amount" not in names:
        frame = frame.drop("amount")
    bad = frame.filter(pl.any_horizontal(pl.all().is_null()))
    if bad.height:
        raise UnreadableFileError(
            f"{bad.height} data line(s) cannot be parsed (date, time or numbers)",
            file=str(path),
        )
    return frame.select(pl.lit(symbol_from_name(path)).alias("symbol"), pl.all())


def _split(line: str, sep: str | None) -> list[str]:
    return [p.strip() for p in line.split(sep)] if sep else line.split()


F = TypeVar("F", pl.DataFrame, pl.LazyFrame)


def morning_close_fix(frame: F) -> F:
    """Minute bars: a 13:00 stamp on a (symbol's) day without an 11:30 bar is the morning's
    last bar, restamped by the vendor; it goes back to 11:30. TongDaXin's exports always get
    this; other files with `data.mapping.morning_close_1300=true`."""
    schema = frame.collect_schema()
    if schema["ts"] == pl.Date or (isinstance(frame, pl.DataFrame) and frame.is_empty()):
        return frame
    t = pl.col("ts").dt.time()
    day = pl.col("ts").dt.date()
    keys = [pl.col("symbol"), day] if "symbol" in schema.names() else [day]
    at_1300 = t == pl.time(13, 0)
    has_1130 = (t == pl.time(11, 30)).any().over(keys)
    moved = pl.col("ts").dt.date().cast(pl.Datetime("us")) + pl.duration(hours=11, minutes=30)
    return frame.with_columns(
        pl.when(at_1300 & ~has_1130).then(moved).otherwise(pl.col("ts")).alias("ts")
    )
