"""Readers for raw parquet/CSV files (files or directories) into the canonical schemas.

Real files differ: `code`/`date` column names, volume in lots of 100, bare 6-digit codes vs
`600000.SH`, bar-start vs bar-end stamps. A `ColumnMapping` (from config) says how a source maps
onto the canonical schema; readers rename, convert units, normalise codes and cast dtypes, and
raise
typed errors that name the file and column when they cannot.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

import polars as pl

from rotation_dl.data.tdx import TDX_SUFFIXES, morning_close_fix
from rotation_dl.errors import EmptyInputError, SchemaError, UnreadableFileError
from rotation_dl.schema import ADJUSTMENT_SCHEMA, BAR_SCHEMA, CLASSIFICATION_SCHEMA

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".parquet", ".pq", ".csv", ".txt", ".day", ".lc1", ".lc5")


@dataclass(frozen=True)
class ColumnMapping:
    """How a source file maps onto a canonical schema.

    Args:
        columns: canonical name -> source column name (only the names that differ).
        volume_multiplier: shares per source volume unit (100 for lots).
        amount_multiplier: currency per source amount unit.
        ts_label: whether source bar stamps mark the bar `end` (canonical) or its `start`.
        symbol_format: `ashare` normalises A-share codes to `600000.SH`; `keep` leaves them.
        datetime_format: strptime format for string timestamps (None: let polars infer).
        morning_close_1300: the vendor stamps the morning's last bar 13:00 (TongDaXin's
            quirk, in any format): a 13:00 bar-end on a symbol's day without an 11:30 bar
            goes back to 11:30.
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    volume_multiplier: float = 1.0
    amount_multiplier: float = 1.0
    ts_label: Literal["end", "start"] = "end"
    symbol_format: Literal["ashare", "keep"] = "ashare"
    datetime_format: str | None = None
    morning_close_1300: bool = False

    def source(self, canonical: str) -> str:
        return self.columns.get(canonical, canonical)


ASHARE_SYMBOL = r"^\d{6}\.(SH|SZ|BJ)$"


def normalize_symbol(expr: pl.Expr) -> pl.Expr:
    """Normalise A-share codes to `NNNNNN.EX`; codes it cannot place pass through unchanged
    (`unplaceable_symbols` finds them).

    Accepts `600000`, `600000.SH`, `600000.sh`, `sh600000`, `SH600000`, `SH.600000`,
    `SH#600000` (TongDaXin), `600000.XSHG`, `000001.XSHE`, `830799.BJ`, `BJ#830799`. A bare code
    gets its exchange from its prefix: 92 -> BJ, 6/9 -> SH, 0/2/3 -> SZ, 4/8 -> BJ.
    """
    s = expr.cast(pl.String).str.strip_chars().str.to_uppercase()
    s = s.str.replace(r"^(\d{6})\.XSHG$", "$1.SH").str.replace(r"^(\d{6})\.XSHE$", "$1.SZ")
    s = s.str.replace(r"^(\d{6})\.BSE$", "$1.BJ")
    s = s.str.replace(r"^(SH|SZ|BJ)[.#]?(\d{6})$", "$2.$1")
    bare = s.str.contains(r"^\d{6}$")
    suffix = (
        pl.when(s.str.starts_with("92"))
        .then(pl.lit(".BJ"))
        .when(s.str.contains(r"^[69]"))
        .then(pl.lit(".SH"))
        .when(s.str.contains(r"^[023]"))
        .then(pl.lit(".SZ"))
        .when(s.str.contains(r"^[48]"))
        .then(pl.lit(".BJ"))
        .otherwise(pl.lit(""))
    )
    return pl.when(bare).then(s + suffix).otherwise(s)


def unplaceable_symbols(symbols: pl.Series) -> list[str]:
    """The distinct source codes that `normalize_symbol` cannot place on SH, SZ or BJ."""
    frame = pl.DataFrame({"symbol": symbols.cast(pl.String).unique().drop_nulls()})
    bad = frame.filter(~normalize_symbol(pl.col("symbol")).str.contains(ASHARE_SYMBOL))
    return sorted(bad["symbol"].to_list())


def normalize_symbols(
    df: pl.DataFrame, symbol_format: str = "ashare", uniques: pl.Series | None = None
) -> pl.DataFrame:
    """Normalise the `symbol` column, working on unique codes only (fast on big frames);
    `uniques`: the column's distinct codes, when already known."""
    if symbol_format != "ashare" or df.is_empty():
        return df
    uniq = df.select(pl.col("symbol").unique()) if uniques is None else uniques.to_frame("symbol")
    mapped = uniq.with_columns(normalize_symbol(pl.col("symbol")).alias("new"))
    changed = mapped.filter(pl.col("symbol") != pl.col("new"))
    if changed.is_empty():
        return df
    table = dict(zip(changed["symbol"].to_list(), changed["new"].to_list(), strict=True))
    return df.with_columns(pl.col("symbol").replace(table))


def _is_bar_file(f: Path) -> bool:
    """Parquet/CSV, or a TongDaXin file named like one (`SH#600000.txt`, `sh600000.day`)."""
    from rotation_dl.data.tdx import is_tdx

    suffix = f.suffix.lower()
    return suffix in (".parquet", ".pq", ".csv") or (suffix in TDX_SUFFIXES and is_tdx(f))


def list_files(path: str | Path, what: str = "input") -> list[Path]:
    """Files under `path` (a file, a directory searched recursively, or a glob)."""
    p = Path(path)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and _is_bar_file(f))
    else:
        files = sorted(
            f
            for f in Path(p.anchor or ".").glob(
                str(p.relative_to(p.anchor)) if p.anchor else str(p)
            )
            if f.is_file()
        )
        if not files:
            raise UnreadableFileError(f"no such {what} file or directory", file=str(path))
    if not files:
        raise EmptyInputError(
            f"no {what} files ({', '.join(SUPPORTED_SUFFIXES)}) found", file=str(path), count=0
        )
    return files


CSV_ENCODINGS = ("utf-8", "gb18030")  # GB18030 reads GBK and GB2312, Chinese vendors' own


def csv_encoding(path: Path, probe: int = 1 << 20) -> str:
    """The encoding a CSV file is read with: UTF-8 when its first `probe` bytes decode as
    such, else GB18030 (a superset of GBK); UnreadableFileError, naming both, otherwise."""
    import codecs

    head = path.read_bytes()[:probe] if path.stat().st_size <= probe else _head(path, probe)
    for name in CSV_ENCODINGS:
        try:
            codecs.getincrementaldecoder(name)().decode(head, final=False)
            return name
        except UnicodeDecodeError:
            continue
    raise UnreadableFileError(
        f"is neither UTF-8 nor GBK/GB18030 text; save it as UTF-8 ({', '.join(CSV_ENCODINGS)} "
        "tried)",
        file=str(path),
    )


def _head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


@functools.lru_cache(maxsize=4)
def _utf8_copy(path: Path, mtime_ns: int, size: int, encoding: str) -> bytes:
    """A non-UTF-8 CSV's bytes re-encoded as UTF-8 (held in memory; polars reads UTF-8)."""
    log.info("%s: read as %s text", path, encoding.upper())
    return path.read_bytes().decode(encoding).encode("utf-8")


def _csv_scan(path: Path, **kw) -> pl.LazyFrame:
    """pl.scan_csv of a UTF-8 file; a GBK/GB18030 one is re-encoded in memory first."""
    encoding = csv_encoding(path)
    if encoding == "utf-8":
        return pl.scan_csv(path, **kw)
    st = path.stat()
    return pl.read_csv(_utf8_copy(path, st.st_mtime_ns, st.st_size, encoding), **kw).lazy()


def _file_schema(path: Path, string_cols: Sequence[str]) -> dict[str, pl.DataType]:
    if path.suffix.lower() in TDX_SUFFIXES:
        return dict(_tdx_frame(path).schema.items())
    if path.suffix.lower() == ".csv":
        csv_encoding(path)  # an unreadable encoding is said as such, not as a polars error
    try:
        if path.suffix.lower() == ".csv":
            return dict(
                _csv_scan(path, schema_overrides={c: pl.String for c in string_cols})
                .collect_schema()
                .items()
            )
        return dict(pl.read_parquet_schema(path).items())
    except Exception as exc:  # polars raises several types for bad files
        raise UnreadableFileError(
            f"cannot be read as {path.suffix.lstrip('.') or 'data'} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]})",
            file=str(path),
        ) from exc


@functools.lru_cache(maxsize=8)
def _tdx_cached(path: Path, mtime_ns: int, size: int) -> pl.DataFrame:
    from rotation_dl.data.tdx import read_tdx

    return read_tdx(path)


def _tdx_frame(path: Path) -> pl.DataFrame:
    st = path.stat()
    return _tdx_cached(path, st.st_mtime_ns, st.st_size)


def scan_file(path: Path, string_cols: Sequence[str] = ()) -> pl.LazyFrame:
    """Lazily scan one parquet, CSV or TongDaXin file (`data.tdx`); raises
    UnreadableFileError if it is not readable."""
    if path.suffix.lower() in TDX_SUFFIXES:
        return _tdx_frame(path).lazy()
    schema = _file_schema(path, string_cols)
    if path.suffix.lower() == ".csv":
        overrides = {c: pl.String for c in string_cols if c in schema}
        return _csv_scan(path, schema_overrides=overrides, infer_schema_length=10_000)
    del schema
    return pl.scan_parquet(path)


# Header words that usually name a canonical column (English and Chinese vendor exports).
COLUMN_HINTS: dict[str, tuple[str, ...]] = {
    "symbol": ("symbol", "code", "ticker", "secu", "stock", "代码", "证券"),
    "industry": ("industry", "sector", "l1", "行业", "板块", "申万"),
    "ts": ("datetime", "time", "date", "日期", "时间"),
    "date": ("date", "日期", "交易日"),
    "start": ("start", "include", "begin", "in_date", "纳入", "开始"),
    "end": ("end", "exclude", "out_date", "剔除", "结束"),
    "factor": ("factor", "adj", "复权"),
    "open": ("open", "开盘"),
    "high": ("high", "最高"),
    "low": ("low", "最低"),
    "close": ("close", "收盘"),
    "volume": ("volume", "vol", "成交量"),
}


def guess_column(canon: str, columns: Sequence[str]) -> str | None:
    """The file's column most likely meant as `canon` (a header hint), or None."""
    for word in COLUMN_HINTS.get(canon, (canon,)):
        for c in columns:
            if word in str(c).lower():
                return str(c)
    return None


def _hydra_name(name: str) -> str:
    """A column name as a Hydra override value: quoted unless plain ASCII."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else f"'{name}'"


def _require_columns(
    schema: Mapping[str, pl.DataType],
    needed: Mapping[str, str],
    file: str,
    key: str | None = None,
) -> None:
    """SchemaError naming the missing columns, the file's own and, with `key`, the setting
    that maps them (with a guess from the headers where one fits)."""
    absent = [canon for canon, src in needed.items() if src not in schema]
    if not absent:
        return
    missing = [f"{canon} (source '{needed[canon]}')" for canon in absent]
    hint = ""
    if key:
        guesses = {c: guess_column(c, list(schema)) for c in needed}
        pairs = ", ".join(
            f"{c}: {_hydra_name(guesses[c] or needed[c] if c in absent else needed[c])}"
            for c in needed
            if c in absent or needed[c] != c
        )
        hint = f'; map them with "{key}={{{pairs}}}"'
    raise SchemaError(
        f"missing column(s) {', '.join(missing)}; file has {list(schema)}{hint}",
        file=file,
        column=needed[absent[0]],
        count=None,
    )


def _check_numeric(schema: Mapping[str, pl.DataType], cols: Mapping[str, str], file: str) -> None:
    for canon, src in cols.items():
        dtype = schema[src]
        if not (dtype.is_numeric() or dtype == pl.Null):
            raise SchemaError(
                f"has dtype {dtype}, expected a number for '{canon}'", file=file, column=src
            )


OFFSET = r"(Z|[+-]\d{2}:?\d{2})$"


def _to_local(aware_utc: pl.Expr, timezone: str) -> pl.Expr:
    return aware_utc.dt.convert_time_zone(timezone).dt.replace_time_zone(None)


def _parse_ts(col: pl.Expr, dtype: pl.DataType, fmt: str | None, timezone: str) -> pl.Expr:
    """Timestamps as naive market-local datetimes.

    Naive values are already local. Zoned ones are converted to `timezone`: datetime columns
    with a time zone, and strings ending in an offset (`+08:00`, `-0500`, `Z`), which may be
    mixed with naive strings in one column. A `datetime_format` with %z or %Z is used as is.
    """
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            return _to_local(col.dt.convert_time_zone("UTC"), timezone).cast(pl.Datetime("us"))
        return col.cast(pl.Datetime("us"))
    if dtype != pl.String:  # a date: daily bars, stamped at midnight
        return col.cast(pl.Datetime("us"))
    if fmt is not None and ("%z" in fmt or "%Z" in fmt):
        aware = col.str.to_datetime(format=fmt, strict=False, time_unit="us", time_zone="UTC")
        return _to_local(aware, timezone)
    text = col.str.strip_chars()
    offset = text.str.extract(OFFSET, 1)
    naive = text.str.replace(OFFSET, "").str.to_datetime(format=fmt, strict=False, time_unit="us")
    sign = pl.when(offset.str.starts_with("-")).then(-1).otherwise(1)
    digits = offset.str.replace_all(r"[^0-9]", "")
    minutes = sign * (
        digits.str.slice(0, 2).cast(pl.Int64, strict=False) * 60
        + digits.str.slice(2, 2).cast(pl.Int64, strict=False)
    )
    utc = naive - pl.duration(minutes=pl.when(offset == "Z").then(0).otherwise(minutes))
    return (
        pl.when(offset.is_null())
        .then(naive)
        .otherwise(_to_local(utc.dt.replace_time_zone("UTC"), timezone))
    )


def _scaled(col: pl.Expr, factor: float | pl.Expr | None) -> pl.Expr:
    """`col * factor`, or `col` itself for no factor or 1 (no copy of the column)."""
    if factor is None or (isinstance(factor, int | float) and factor == 1):
        return col
    return col * factor


def read_bars_file(
    path: Path, mapping: ColumnMapping, *, timezone: str, with_row_index: bool = True
) -> pl.LazyFrame:
    """One raw bar file -> lazy frame in BAR_SCHEMA (plus `_row` file order, `_file`).

    With an `adj_close` column (adjusted or total-return close, mapped like any other), open,
    high, low and close are scaled by adj_close / close, so the store holds adjusted prices;
    volume and amount stay as traded. The `ts` source column may be a datetime (naive =
    market-local, or zoned), a date (daily bars) or a string (with or without an offset);
    zoned stamps are converted to the market's `timezone`. String timestamps that fail to
    parse raise SchemaError with the count and an example. Bar-start stamps are shifted to
    bar-end later, once the bar size is known.
    """
    file = str(path)
    sym_src = mapping.source("symbol")
    lf = scan_file(path, string_cols=[sym_src])
    schema = lf.collect_schema()
    needed = {c: mapping.source(c) for c in BAR_SCHEMA if c != "amount"}
    _require_columns(schema, needed, file, key="data.mapping.columns")
    amount_src = mapping.source("amount")
    has_amount = amount_src in schema
    _check_numeric(
        schema,
        {c: mapping.source(c) for c in ("open", "high", "low", "close", "volume")}
        | ({"amount": amount_src} if has_amount else {}),
        file,
    )
    ts_src = mapping.source("ts")
    ts_dtype = schema[ts_src]
    if not (ts_dtype in (pl.String, pl.Date) or isinstance(ts_dtype, pl.Datetime)):
        raise SchemaError(
            f"has dtype {ts_dtype}, expected a datetime, date or datetime string for 'ts'",
            file=file,
            column=ts_src,
        )
    if with_row_index:
        lf = lf.with_row_index("_row")
    sym = pl.col(sym_src).cast(pl.String)  # normalised per unique code by `normalize_symbols`
    close = pl.col(mapping.source("close")).cast(pl.Float64)
    volume = _scaled(pl.col(mapping.source("volume")).cast(pl.Float64), mapping.volume_multiplier)
    amount = (
        _scaled(pl.col(amount_src).cast(pl.Float64), mapping.amount_multiplier)
        if has_amount
        else close * volume  # no amount column: approximate traded value by close x volume
    )
    pre_src = mapping.source("pre_close")  # the exchange's previous close (vendor daily files)
    pre_close = pl.col(pre_src).cast(pl.Float64) if pre_src in schema else pl.lit(None, pl.Float64)
    adj_src = mapping.source("adj_close")  # adjusted / total-return close: prices scaled to it
    scale: pl.Expr | None = None  # None: prices as they are (no copy)
    if adj_src in schema:
        _check_numeric(schema, {"adj_close": adj_src}, file)
        adj = pl.col(adj_src).cast(pl.Float64)
        scale = pl.when(close > 0).then(adj / close).otherwise(1.0)
        pre_close = pl.lit(None, pl.Float64)  # a raw previous close means nothing here
    cols = [
        sym.alias("symbol"),
        _parse_ts(pl.col(ts_src), ts_dtype, mapping.datetime_format, timezone).alias("ts"),
        *(
            _scaled(pl.col(mapping.source(c)).cast(pl.Float64), scale).alias(c)
            for c in ("open", "high", "low")
        ),
        _scaled(close, scale).alias("close"),
        volume.alias("volume"),
        amount.alias("amount"),
        pre_close.alias("pre_close"),
        pl.lit(file).alias("_file"),
    ]
    if with_row_index:
        cols.insert(0, pl.col("_row"))
    out = lf.select(cols)
    if mapping.morning_close_1300 and mapping.ts_label == "end":
        out = morning_close_fix(out)
    if ts_dtype == pl.String:
        bad = (
            lf.select(pl.col(ts_src))
            .filter(
                pl.col(ts_src).is_not_null()
                & _parse_ts(pl.col(ts_src), ts_dtype, mapping.datetime_format, timezone).is_null()
            )
            .collect()
        )
        if bad.height:
            raise SchemaError(
                "have timestamps that cannot be parsed",
                file=file,
                column=ts_src,
                count=bad.height,
                example=bad.row(0)[0],
            )
    return out


def read_classification(
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    symbol_format: Literal["ashare", "keep"] = "ashare",
    on_missing_industry: Literal["fail", "drop"] = "fail",
) -> pl.DataFrame:
    """Read a stock -> industry classification into CLASSIFICATION_SCHEMA.

    `start`/`end` (inclusive dates) are optional. When only `start` is given, the table is read
    as a change history: a stock's industry holds from its `start` until the day before its
    next `start`.
    """
    cols = dict(columns or {})
    file = str(path)
    files = list_files(path, "classification")
    sym_src = cols.get("symbol", "symbol")
    frames = [scan_file(f, string_cols=[sym_src]) for f in files]
    lf = pl.concat(frames, how="diagonal_relaxed")
    schema = lf.collect_schema()
    needed = {c: cols.get(c, c) for c in ("symbol", "industry")}
    _require_columns(schema, needed, file, key="data.classification_columns")
    start_src, end_src = cols.get("start", "start"), cols.get("end", "end")
    exprs = [
        (
            normalize_symbol(pl.col(needed["symbol"]))
            if symbol_format == "ashare"
            else pl.col(needed["symbol"]).cast(pl.String)
        ).alias("symbol"),
        pl.col(needed["industry"]).cast(pl.String).str.strip_chars().alias("industry"),
    ]
    for canon, src in (("start", start_src), ("end", end_src)):
        if src in schema:
            dtype = schema[src]
            e = pl.col(src)
            if dtype == pl.String:
                e = e.str.to_date(strict=False)
            elif dtype.is_integer():
                e = e.cast(pl.String).str.to_date("%Y%m%d", strict=False)
            exprs.append(e.cast(pl.Date).alias(canon))
        else:
            exprs.append(pl.lit(None, dtype=pl.Date).alias(canon))
    df = lf.select(exprs).collect()
    if df.is_empty():
        raise EmptyInputError("classification has no rows", file=file, count=0)
    missing = df.filter(pl.col("industry").is_null() | (pl.col("industry") == ""))
    if missing.height:
        if on_missing_industry == "fail":
            raise SchemaError(
                "have no industry (set on_missing_industry=drop to skip them)",
                file=file,
                column=needed["industry"],
                count=missing.height,
                example=missing.row(0, named=True),
            )
        log.warning("%s: dropped %d classification rows with no industry", file, missing.height)
        df = df.filter(pl.col("industry").is_not_null() & (pl.col("industry") != ""))
    if start_src in schema and end_src not in schema:
        df = df.sort("symbol", "start").with_columns(
            (pl.col("start").shift(-1).over("symbol") - pl.duration(days=1)).alias("end")
        )
    out = df.select(list(CLASSIFICATION_SCHEMA)).cast(CLASSIFICATION_SCHEMA)
    refuse_overlapping_intervals(out, file)
    return out


def refuse_overlapping_intervals(cls: pl.DataFrame, file: str) -> None:
    """A stock in two industries over overlapping [start, end] intervals contradicts itself,
    whether or not it traded then: refused with the stock, the dates and both industries."""
    lo, hi = pl.col("start").fill_null(date.min), pl.col("end").fill_null(date.max)
    rows = cls.select("symbol", "industry", lo.alias("lo"), hi.alias("hi")).sort("symbol", "lo")
    # after sorting by start, an overlap shows as an interval starting before the running
    # latest end of the stock's earlier intervals
    prev_hi = pl.col("hi").cum_max().shift(1).over("symbol")
    prev_ind = pl.col("industry").shift(1).over("symbol")
    clash = rows.with_columns(prev_hi.alias("prev_hi"), prev_ind.alias("prev_industry")).filter(
        (pl.col("lo") <= pl.col("prev_hi")) & (pl.col("industry") != pl.col("prev_industry"))
    )
    if clash.height:
        r = clash.row(0, named=True)
        until = "(no end)" if r["prev_hi"] == date.max else f"until {r['prev_hi']}"
        since = "(no start)" if r["lo"] == date.min else f"from {r['lo']}"
        raise SchemaError(
            "overlap an interval of the same stock in another industry (start/end): the file "
            "contradicts itself",
            file=file,
            column="start/end",
            count=clash.height,
            example=f"{r['symbol']} in {r['prev_industry']} {until} and in {r['industry']} "
            f"{since}",
            unit="interval",
        )


def read_adjustment(
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    symbol_format: Literal["ashare", "keep"] = "ashare",
    start: date | None = None,
    end: date | None = None,
) -> pl.DataFrame:
    """Read adjustment factors (symbol, date, factor; adjusted = raw x factor).

    With `start`/`end`, only what adjusts bars of [start, end] as of each day: rows dated up to
    `end`, from each code's factor in force on `start` on. Codes are normalised once per unique
    code."""
    cols = dict(columns or {})
    file = str(path)
    sym_src = cols.get("symbol", "symbol")
    lf = pl.concat([scan_file(f, [sym_src]) for f in list_files(path, "adjustment")])
    schema = lf.collect_schema()
    needed = {c: cols.get(c, c) for c in ADJUSTMENT_SCHEMA}
    _require_columns(schema, needed, file, key="data.adjustment_columns")
    lf = lf.select(
        pl.col(needed["symbol"]).cast(pl.String).alias("symbol"),
        pl.col(needed["date"]).cast(pl.Date).alias("date"),
        pl.col(needed["factor"]).cast(pl.Float64).alias("factor"),
    )
    if end is not None:
        lf = lf.filter(pl.col("date") <= end)
    if start is not None:  # each code's latest factor on or before start, and what follows
        in_force = pl.col("date").filter(pl.col("date") <= start).max().over("symbol")
        lf = lf.filter(pl.col("date") >= in_force.fill_null(start))
    df = normalize_symbols(lf.collect(), symbol_format)
    bad = df.filter(~pl.col("factor").is_finite() | (pl.col("factor") <= 0))
    if bad.height:
        from rotation_dl.errors import ValueRangeError

        raise ValueRangeError(
            "have a non-positive or non-finite adjustment factor",
            file=file,
            column=needed["factor"],
            count=bad.height,
            example=bad.row(0, named=True),
        )
    return df


def read_daily_closes(
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    symbol_format: Literal["ashare", "keep"] = "ashare",
    start: date | None = None,
    end: date | None = None,
) -> pl.DataFrame:
    """Adjusted daily closes (symbol, date, close) from daily bar files, e.g. to derive factors.

    The date range is applied to the source column first (so parquet statistics can skip data)
    and codes are normalised once per unique symbol.
    """
    cols = dict(columns or {})
    file = str(path)
    sym_src, date_src, close_src = (cols.get(c, c) for c in ("symbol", "ts", "close"))
    date_src = cols.get("date", date_src if date_src in cols.values() else "date")
    lf = pl.concat([scan_file(f, [sym_src]) for f in list_files(path, "daily bar")])
    schema = lf.collect_schema()
    needed = {"symbol": sym_src, "date": date_src, "close": close_src}
    _require_columns(schema, needed, file, key="data.adjusted_daily_columns")
    d = pl.col(date_src)
    d = d.str.to_date(strict=False) if schema[date_src] == pl.String else d.cast(pl.Date)
    if start is not None:
        lf = lf.filter(d >= start)
    if end is not None:
        lf = lf.filter(d <= end)
    df = lf.select(
        pl.col(sym_src).cast(pl.String).alias("symbol"),
        d.alias("date"),
        pl.col(close_src).cast(pl.Float64).alias("close"),
    ).collect()
    return normalize_symbols(df, symbol_format)
