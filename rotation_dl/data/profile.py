"""Whole-input checks before anything is validated in chunks or stored: one cheap pass per file
collects its dates (with row counts), its distinct symbols and its units ratio, so counts and
refusals cover every file, not the first chunk.

* symbols the symbol format cannot place (`SymbolFormatError`);
* units: the median of amount / (volume x close) per file is ~1 when volume is in shares and
  amount in currency; ~100 means volume in lots of 100, ~1e-4 amount in 10,000s
  (`UnitsError`, naming the setting that fixes it); a file without an amount column gets
  close x volume, said once. Adjusted prices move the ratio too (forward-adjusted closes sit
  below the traded ones), so a file outside the band is looked at again on each stock's last
  traded bar, where a forward adjustment factor is 1; if the ratio is still off and varies by
  stock, the error names adjustment, and `data.units_unchecked` takes named files as they are;
* dates that cannot be trading days: weekends, after today, exchange holidays
  (`NonTradingDayError`, or dropped and counted under `on_non_trading_day=drop`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from fnmatch import fnmatch
from pathlib import Path

import polars as pl

from rotation_dl.data.calendar import non_trading_days
from rotation_dl.data.readers import (
    ColumnMapping,
    read_bars_file,
    scan_file,
    unplaceable_symbols,
)
from rotation_dl.errors import (
    EmptyInputError,
    NonTradingDayError,
    RotationDLError,
    SymbolFormatError,
    UnitsError,
    UnreadableFileError,
)

UNITS_OK = (0.5, 2.0)  # amount / (volume x close): VWAP / close stays well inside this
UNITS_SAMPLE = 50_000  # first rows per file whose traded rows give the units median


@dataclass(frozen=True)
class FileProfile:
    path: Path
    rows_per_date: dict[date, int]
    symbols: pl.Series
    amount_ratio: float | None  # median amount / (volume x close); None without amounts
    has_amount: bool
    # only for a file whose amount_ratio is out of band: the median over stocks of the ratio
    # on each stock's last traded bar, and the range of the stocks' first-bar ratios
    latest_ratio: float | None = None
    ratio_range: tuple[float, float] | None = None

    @property
    def dates(self) -> list[date]:
        return sorted(self.rows_per_date)


_UNITS_COLS = ("volume", "close", "amount")  # NaN > 0 is true in polars: finite first
TRADED = (
    pl.all_horizontal([pl.col(c).is_finite() & (pl.col(c) > 0) for c in _UNITS_COLS])
    & (pl.col("volume") * pl.col("close")).is_finite()
)  # absurd values are validation's to name, not a units question
RATIO = pl.col("amount") / (pl.col("volume") * pl.col("close"))
UNITS_RATIO = RATIO.median().alias("r")


def units_in_band(ratio: float | None) -> bool:
    return ratio is None or UNITS_OK[0] <= ratio <= UNITS_OK[1]


def ratios_by_stock(frame: pl.LazyFrame) -> tuple[float | None, tuple[float, float] | None]:
    """(median over stocks of amount / (volume x close) on each stock's last traded bar,
    (min, max) over stocks of it on their first traded bar): a second look at a file whose
    prices may be adjusted."""
    per_stock = (
        frame.filter(TRADED)
        .group_by("symbol")
        .agg(RATIO.sort_by("ts").last().alias("last"), RATIO.sort_by("ts").first().alias("first"))
        .select(pl.col("last").median(), pl.col("first").min().alias("lo"), pl.col("first").max())
        .collect()
    )
    if per_stock.height == 0 or per_stock["last"][0] is None:
        return None, None
    row = per_stock.row(0)
    return float(row[0]), (float(row[1]), float(row[2]))


def has_amount_column(path: Path, mapping: ColumnMapping) -> bool:
    return mapping.source("amount") in scan_file(path, [mapping.source("symbol")]).collect_schema()


def profile_file(path: Path, mapping: ColumnMapping, timezone: str) -> FileProfile:
    """One pass over a file's ts, symbol and price/volume/amount columns."""
    file = str(path)
    lf = read_bars_file(path, mapping, timezone=timezone, with_row_index=False)
    has_amount = has_amount_column(path, mapping)
    # a units mistake shows in any rows: the file's first rows (read alone, the reader stops
    # there) keep the pass cheap; only if none of them traded is the whole file searched
    units = lf.head(UNITS_SAMPLE).filter(TRADED).select(UNITS_RATIO)
    days, symbols, ratio = _collect(  # one scan, aggregated as it streams
        [
            lf.group_by(pl.col("ts").dt.date().alias("d")).agg(pl.len().alias("n")),
            lf.select(pl.col("symbol").unique()),
            units,
        ],
        file,
    )
    if days.height == 0:
        raise EmptyInputError("has no rows", file=file, count=0)
    r = ratio.item() if has_amount else None  # None too when no row has all three
    if has_amount and r is None:
        r = _collect([lf.filter(TRADED).select(UNITS_RATIO)], file)[0].item()
    latest, spread = (None, None) if units_in_band(r) else ratios_by_stock(lf)
    return FileProfile(
        path,
        dict(zip(days["d"].to_list(), days["n"].to_list(), strict=True)),
        symbols["symbol"],
        float(r) if r is not None else None,
        has_amount,
        latest,
        spread,
    )


def profile_frame(
    path: Path, raw: pl.DataFrame, has_amount: bool, dates: list[date] | None = None
) -> FileProfile:
    """`profile_file` of a file already read whole (`read_bars_file`, file order): the same
    profile without another pass over the file. `dates`: its dates, when already known."""
    if dates is not None and len(dates) == 1:
        days = pl.DataFrame({"d": dates, "n": [raw.height]})
    else:
        days = raw.group_by(pl.col("ts").dt.date().alias("d")).agg(pl.len().alias("n"))
    r = None
    if has_amount:
        r = raw.head(UNITS_SAMPLE).filter(TRADED).select(UNITS_RATIO).item()
        if r is None:
            r = raw.filter(TRADED).select(UNITS_RATIO).item()
    latest, spread = (None, None) if units_in_band(r) else ratios_by_stock(raw.lazy())
    return FileProfile(
        path,
        dict(zip(days["d"].to_list(), days["n"].to_list(), strict=True)),
        raw["symbol"].unique(),
        float(r) if r is not None else None,
        has_amount,
        latest,
        spread,
    )


def _day(value: object) -> date | None:
    """The date of a parquet statistic (datetime or date), None for anything else."""
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else None


def small_file_dates(
    path: Path, mapping: ColumnMapping, timezone: str, max_rows: int
) -> list[date] | None:
    """The dates of a parquet file of at most `max_rows` rows (read whole in one step, so its
    profile comes from that read), or None for any other file. A file whose naive timestamps
    all fall on one day (a file per day) needs only its footer; others read `ts` alone."""
    if path.suffix.lower() not in (".parquet", ".pq"):
        return None
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        col = names.index(mapping.source("ts"))
    except Exception:  # unreadable, or no ts column: the full profile names the problem
        return None
    if not 0 < meta.num_rows <= max_rows:
        return None
    lows, highs, kind = [], [], str(meta.schema.column(col).logical_type)
    naive = kind.startswith("Timestamp(isAdjustedToUTC=false") or kind == "Date"
    for g in range(meta.num_row_groups):
        st = meta.row_group(g).column(col).statistics
        if not (naive and st is not None and st.has_min_max and st.null_count == 0):
            break
        lows.append(st.min)
        highs.append(st.max)
    else:
        first, last = _day(min(lows)), _day(max(highs))
        if first is not None and first == last:
            return [first]
    try:
        lf = read_bars_file(path, mapping, timezone=timezone, with_row_index=False)
        days = lf.select(pl.col("ts").dt.date().unique().sort()).collect()["ts"]
    except Exception:  # unreadable: the full profile names the problem
        return None
    return None if days.null_count() else days.to_list()


def _collect(queries: list[pl.LazyFrame], file: str) -> list[pl.DataFrame]:
    """Collect queries over one file together; read failures become UnreadableFileError."""
    try:
        return pl.collect_all(queries)
    except RotationDLError:
        raise
    except Exception as exc:  # a file that scans but cannot be read through
        raise UnreadableFileError(
            f"cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", file=file
        ) from exc


def check_symbols(profiles: Sequence[FileProfile], mapping: ColumnMapping) -> None:
    """Refuse codes the A-share symbol format cannot place, counted over every file."""
    if mapping.symbol_format != "ashare":
        return
    bad: dict[str, str] = {}
    for p in profiles:
        for code in unplaceable_symbols(p.symbols):
            bad.setdefault(code, str(p.path))
    if bad:
        files = sorted(set(bad.values()))
        raise SymbolFormatError(
            "cannot be placed on an A-share exchange (SH/SZ/BJ); set "
            "data.mapping.symbol_format=keep for other markets",
            file=files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more files)",
            column=mapping.source("symbol"),
            count=len(bad),
            example=sorted(bad)[:5],
            unit="symbol",
        )


def units_fix(ratio: float, mapping: ColumnMapping) -> str:
    """What a units ratio far from 1 most likely means, and the setting that fixes it."""
    k = round(math.log10(ratio)) if ratio > 0 else 0
    if k >= 1:
        return (
            f"volume looks {10**k:g}x too small (lots of {10**k:g} shares?): set "
            f"data.mapping.volume_multiplier={mapping.volume_multiplier * 10**k:g}"
        )
    if k <= -1:
        return (
            f"amount looks {10**-k:g}x too small (in units of {10**-k:g}?): set "
            f"data.mapping.amount_multiplier={mapping.amount_multiplier * 10**-k:g}"
        )
    return "volume or amount units look inconsistent: check volume_multiplier, amount_multiplier"


def _power_of_ten(ratio: float) -> bool:
    """A ratio a units mistake makes: 10^k (k != 0), give or take the VWAP/close spread."""
    if ratio <= 0:
        return False
    k = math.log10(ratio)
    return round(k) != 0 and abs(k - round(k)) < 0.15


def unchecked(path: Path, patterns: Sequence[str]) -> bool:
    """Whether `path` matches one of the `data.units_unchecked` glob patterns (name or path)."""
    return any(fnmatch(path.name, p) or fnmatch(str(path), p) for p in patterns)


def check_units(
    profiles: Sequence[FileProfile],
    mapping: ColumnMapping,
    units_unchecked: Sequence[str] = (),
    final: bool = False,
) -> list[str]:
    """Refuse a file whose amount and volume x price disagree; returns notes for the report.

    Out of band, a file is forward-adjusted (noted, not refused) when its stocks' last traded
    bars are in band, or, in the `final` check over the whole input, when later files are in
    band (the data reach the traded prices); a power-of-ten ratio is a units slip (the setting
    named); any other ratio waits for the final check, which refuses it naming adjustment and
    the per-file override. Files matching `units_unchecked` are taken as they are (noted)."""
    notes: list[str] = []
    for p in profiles:
        r = p.amount_ratio
        if units_in_band(r):
            continue
        assert r is not None
        name = p.path.name
        if unchecked(p.path, units_unchecked):
            notes.append(f"{name}: units taken as they are (data.units_unchecked)")
            continue
        if units_in_band(p.latest_ratio):
            notes.append(
                f"{name}: amount / (volume x close) {r:.3g} overall but {p.latest_ratio:.3g} on "
                "each stock's last bar: prices look forward-adjusted"
            )
            continue
        lo, hi = p.ratio_range or (r, r)
        if p.latest_ratio is not None and _power_of_ten(p.latest_ratio):
            fix = units_fix(p.latest_ratio, mapping)  # a units slip, seen on unadjusted bars
        elif _power_of_ten(r) and hi <= lo * 1.5:
            fix = units_fix(r, mapping)
        elif not final:
            continue  # adjusted prices or not: the whole input decides
        elif any(
            q.has_amount and units_in_band(q.amount_ratio) and q.dates[0] > p.dates[-1]
            for q in profiles
        ):
            notes.append(
                f"{name}: amount / (volume x close) {r:.3g}, no power of ten, while later files "
                "are about 1: prices look forward-adjusted"
            )
            continue
        else:
            fix = (
                f"it is no power of ten ({lo:.3g} to {hi:.3g} by stock), as adjusted prices make "
                "it: map the traded close as close and the adjusted one as adj_close, or set "
                f"\"data.units_unchecked=['{name}']\" to take this file's units as they are"
            )
        raise UnitsError(
            f"median amount / (volume x close) is {r:.4g}, expected about 1 (volume in "
            f"shares, amount in currency): {fix}",
            file=str(p.path),
            column=mapping.source("amount"),
        )
    derived = [p for p in profiles if not p.has_amount]
    if derived:
        notes.append(
            f"amount derived as close x volume for {len(derived)} file(s) without an "
            f"'{mapping.source('amount')}' column"
        )
    return notes


def check_trading_days(
    profiles: Sequence[FileProfile],
    calendar: str | None,
    timezone: str,
    on_non_trading_day: str,
    today: date | None = None,
) -> dict[date, str]:
    """Dates that cannot be trading days (with the reason), refused unless the policy drops
    them; returns the dates to drop."""
    all_dates = {d for p in profiles for d in p.rows_per_date}
    bad = non_trading_days(all_dates, calendar, timezone, today)
    if bad and on_non_trading_day == "fail":
        rows = sum(n for p in profiles for d, n in p.rows_per_date.items() if d in bad)
        files = [p.path for p in profiles if any(d in bad for d in p.rows_per_date)]
        first = min(bad)
        raise NonTradingDayError(
            f"fall on {len(bad)} date(s) that cannot be trading days (set "
            "ingest.policy.on_non_trading_day=drop to leave them out)",
            file=str(files[0]) if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more)",
            column=None,
            count=rows,
            example=f"{first} is {bad[first]}",
        )
    return bad
