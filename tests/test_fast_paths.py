"""The fast paths of ingest and the industry build against their full formulations.

* `validate_bars` takes a few-pass path for clean, ordered chunks; it must return exactly what
  the full checks (`validate_fully`) return, and step aside for anything else.
* Files read whole in one step are profiled from that read; refusals must still count every
  file and come in the order of the whole-input checks.
* The streamed industry build runs a numpy kernel; it must equal the polars formulation
  (`industry_bars`) for both weightings, point-in-time classifications, dropped symbols,
  untraded bars, placeholders and industries that appear late.
"""

from __future__ import annotations

import itertools
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from conftest import day_bars, next_days, write
from polars.testing import assert_frame_equal

from rotation_dl.data.ingest import ingest_bars
from rotation_dl.data.profile import small_file_dates
from rotation_dl.data.readers import ColumnMapping
from rotation_dl.data.store import scan_store
from rotation_dl.data.validate import IngestPolicy, _clean_fast, validate_bars, validate_fully
from rotation_dl.errors import (
    BarSizeError,
    DuplicateRowsError,
    NonTradingDayError,
    SymbolFormatError,
    UnitsError,
    ValueRangeError,
)
from rotation_dl.industry.aggregate import (
    add_return_index,
    add_vwap_gap,
    aggregate_industry_returns,
    industry_bars,
    map_industries,
    stock_bar_returns,
)
from rotation_dl.industry.kernel import industry_chunk
from rotation_dl.session import A_SHARE

POLICY = IngestPolicy()


def _market(days: int = 3, bar_minutes: int = 15, seed: int = 0) -> pl.DataFrame:
    """Random-walk bars for five symbols, sorted by (symbol, ts), with a `_row` file order."""
    rng = np.random.default_rng(seed)
    frames = []
    for d in next_days(days):
        for k, sym in enumerate(("000001.SZ", "300750.SZ", "600000.SH", "600519.SH", "688981.SH")):
            bars = day_bars((sym,), day=d, bar_minutes=bar_minutes, price=10.0 + k)
            move = np.exp(np.cumsum(rng.normal(0, 0.003, bars.height)))
            vol = rng.integers(0, 3, bars.height) * 1000.0  # some bars without a trade
            frames.append(
                bars.with_columns(
                    (pl.col(c) * move).alias(c) for c in ("open", "high", "low", "close")
                ).with_columns(
                    pl.Series("volume", vol), (pl.col("close") * pl.Series(vol)).alias("amount")
                )
            )
    out = pl.concat(frames).sort("symbol", "ts")
    return out.with_row_index("_row").with_columns(pl.lit("f.parquet").alias("_file"))


def _suspend(df: pl.DataFrame, symbol: str, day: str) -> pl.DataFrame:
    """A client's fill of a suspension: flat bars at one level, no volume."""
    on = (pl.col("symbol") == symbol) & (pl.col("ts").dt.date() == date.fromisoformat(day))
    return df.with_columns(
        *[pl.when(on).then(pl.lit(9.5)).otherwise(pl.col(c)).alias(c)
          for c in ("open", "high", "low", "close")],
        *[pl.when(on).then(pl.lit(0.0)).otherwise(pl.col(c)).alias(c)
          for c in ("volume", "amount")],
    )  # fmt: skip


def _zero_bar(df: pl.DataFrame, row: int) -> pl.DataFrame:
    cols = ("open", "high", "low", "close", "volume", "amount")
    return df.with_columns(
        pl.when(pl.col("_row") == row).then(pl.lit(0.0)).otherwise(pl.col(c)).alias(c)
        for c in cols
    )


def _case(name: str) -> tuple[pl.DataFrame, dict]:
    days = next_days(3)
    base = _market()
    if name == "clean":
        return base, {}
    if name == "suspended_day":
        return _suspend(base, "600000.SH", days[1]), {}
    if name == "zero_bars_and_suspension":
        return _zero_bar(_suspend(base, "300750.SZ", days[0]), 100), {}
    if name == "bar_start_stamps":
        return base.with_columns(pl.col("ts") - timedelta(minutes=15)), {"ts_label": "start"}
    if name == "known_size":
        return base, {"bar_minutes": 15}
    if name == "partly_quiet_day":  # flat, no volume, but at two levels: kept, not suspended
        on = (pl.col("symbol") == "600519.SH") & (pl.col("ts").dt.date().cast(str) == days[2])
        quiet = base.with_columns(
            pl.when(on).then(pl.lit(0.0)).otherwise(pl.col("volume")).alias("volume"),
            pl.when(on).then(pl.col("close")).otherwise(pl.col("high")).alias("high"),
            pl.when(on).then(pl.col("close")).otherwise(pl.col("low")).alias("low"),
            pl.when(on).then(pl.col("close")).otherwise(pl.col("open")).alias("open"),
        )
        return quiet, {}
    if name == "open_at_high_within_tolerance":  # float32 sources: inside the slack
        return _at_row_7(base, "open", pl.col("high") * (1 + 5e-7)), {}
    if name == "price_at_the_ceiling":  # exactly max_price is allowed
        for c in ("open", "high", "low", "close"):
            base = _at_row_7(base, c, POLICY.max_price)
        return base, {}
    if name == "huge_volume":  # close x volume still finite
        return _at_row_7(base, "volume", 1e300), {}
    if name == "daily":
        daily = base.group_by("symbol", pl.col("ts").dt.date()).agg(
            pl.col("open").first(), pl.col("high").max(), pl.col("low").min(),
            pl.col("close").last(), pl.col("volume").sum(), pl.col("amount").sum(),
        )  # fmt: skip
        daily = daily.with_columns(pl.col("ts").cast(pl.Datetime("us"))).sort("symbol", "ts")
        return daily.with_row_index("_row").with_columns(pl.lit("f").alias("_file")), {}
    raise ValueError(name)


CLEAN_CASES = [
    "clean",
    "suspended_day",
    "zero_bars_and_suspension",
    "bar_start_stamps",
    "known_size",
    "partly_quiet_day",
    "open_at_high_within_tolerance",
    "price_at_the_ceiling",
    "huge_volume",
    "daily",
]


@pytest.mark.parametrize("name", CLEAN_CASES)
def test_fast_validation_equals_the_full_checks(name):
    df, kw = _case(name)
    fast = _clean_fast(df, A_SHARE, POLICY, kw.get("ts_label", "end"), kw.get("bar_minutes"))
    assert fast is not None, "a clean ordered chunk takes the fast path"
    full = validate_fully(df, "f", A_SHARE, POLICY, **kw)
    assert fast[1:] == full[1:]  # bar size and drop counts
    assert_frame_equal(fast[0], full[0])
    if name == "suspended_day":
        assert full[2] == {"suspended_day_bars": 16}
    if name == "partly_quiet_day":
        assert full[2] == {}


def _swap_rows(df: pl.DataFrame, a: int, b: int) -> pl.DataFrame:
    order = list(range(df.height))
    order[a], order[b] = order[b], order[a]
    return df[order]


def _at_row_7(df: pl.DataFrame, column: str, value: object) -> pl.DataFrame:
    """`column` set to `value` (a literal or an expression) in the row with `_row` 7."""
    value = value if isinstance(value, pl.Expr) else pl.lit(value)
    return df.with_columns(
        pl.when(pl.col("_row") == 7).then(value).otherwise(pl.col(column)).alias(column)
    )


@pytest.mark.parametrize(
    "name, broken, error",
    [
        ("unsorted", lambda d: _swap_rows(d, 3, 4).with_columns(pl.col("_row").sort()), None),
        ("duplicate", lambda d: pl.concat([d[:5], d[4:]]), DuplicateRowsError),
        ("null", lambda d: _at_row_7(d, "close", None), ValueRangeError),
        ("nan", lambda d: _at_row_7(d, "high", float("nan")), ValueRangeError),
        ("nan_amount", lambda d: _at_row_7(d, "amount", float("nan")), ValueRangeError),
        ("inf_volume", lambda d: _at_row_7(d, "volume", float("inf")), ValueRangeError),
        ("neg_amount", lambda d: _at_row_7(d, "amount", -1.0), ValueRangeError),
        ("overflow", lambda d: _at_row_7(d, "volume", 1e308), ValueRangeError),
        ("absurd", lambda d: _at_row_7(d, "high", 2e7), ValueRangeError),
        ("open_above", lambda d: _at_row_7(d, "open", pl.col("high") * 1.01), ValueRangeError),
        ("close_below", lambda d: _at_row_7(d, "close", pl.col("low") * 0.99), ValueRangeError),
        ("high_below", lambda d: _at_row_7(d, "high", pl.col("low") * 0.98), ValueRangeError),
        ("zero_price", lambda d: _at_row_7(d, "low", 0.0), ValueRangeError),
        ("off_grid", lambda d: _at_row_7(d, "ts", pl.col("ts") + timedelta(minutes=3)), None),
        ("second", lambda d: _at_row_7(d, "ts", pl.col("ts") + timedelta(seconds=1)), None),
        (
            "mixed_sizes",
            lambda d: d.filter((pl.col("symbol") != "600000.SH") | (pl.col("_row") % 2 == 0)),
            None,
        ),
    ],
)
def test_fast_validation_steps_aside_for_anything_else(name, broken, error):
    """The fast path returns None; `validate_bars` then gives the full checks' answer."""
    df = broken(_market())
    assert _clean_fast(df, A_SHARE, POLICY, "end", None) is None
    try:
        expected = validate_fully(df, "f", A_SHARE, POLICY)
    except Exception as exc:  # the same typed error, word for word
        if error is not None:
            assert isinstance(exc, error)
        with pytest.raises(type(exc)) as got:
            validate_bars(df, "f", A_SHARE, POLICY)
        assert str(got.value) == str(exc)
        return
    got_df, size, dropped = validate_bars(df, "f", A_SHARE, POLICY)
    assert (size, dropped) == expected[1:]
    assert_frame_equal(got_df, expected[0])


def test_unsorted_rows_are_sorted_alike_under_the_sort_policy():
    df = _swap_rows(_market(), 3, 4)
    policy = IngestPolicy(on_unsorted="sort")
    got = validate_bars(df, "f", A_SHARE, policy)
    assert_frame_equal(got[0], validate_fully(df, "f", A_SHARE, policy)[0])
    assert got[0]["symbol"].is_sorted()


# ---- ingest: files read whole are profiled from that read ----------------------------------


def _day_files(tmp_path, days, symbols=("600000.SH", "600001.SH")):
    for d in days:
        write(day_bars(symbols, day=d), tmp_path / "raw" / f"{d}.parquet")
    return tmp_path / "raw"


def test_small_file_dates_from_the_footer_or_the_ts_column(tmp_path):
    m = ColumnMapping()
    one = write(day_bars(day="2025-01-03"), tmp_path / "one.parquet")
    assert small_file_dates(one, m, "Asia/Shanghai", 1000) == [date(2025, 1, 3)]
    two = write(pl.concat([day_bars(day="2025-01-03"), day_bars(day="2025-01-06")]),
                tmp_path / "two.parquet")  # fmt: skip
    assert small_file_dates(two, m, "Asia/Shanghai", 1000) == [date(2025, 1, 3), date(2025, 1, 6)]
    assert small_file_dates(two, m, "Asia/Shanghai", 31) is None  # too big to read whole
    csv = write(day_bars(day="2025-01-03"), tmp_path / "one.csv")
    assert small_file_dates(csv, m, "Asia/Shanghai", 1000) is None
    zoned = day_bars(day="2025-01-03").with_columns(
        pl.col("ts").dt.replace_time_zone("Asia/Shanghai").dt.convert_time_zone("UTC")
    )  # a zoned column: the footer's UTC stamps are not market dates; the ts read converts
    z = write(zoned, tmp_path / "zoned.parquet")
    assert small_file_dates(z, m, "Asia/Shanghai", 1000) == [date(2025, 1, 3)]


@pytest.mark.parametrize("chunk_days", [None, 1000])
def test_profile_from_the_read_gives_the_same_store_and_report(tmp_path, chunk_days):
    """chunk_days set: every file is profiled in a pass of its own (the reference)."""
    days = next_days(5)
    raw = _day_files(tmp_path, days[:4])
    weekend = day_bars(("600000.SH",), day="2025-01-04")  # a Saturday, dropped by policy
    write(pl.concat([day_bars(("600000.SH",), day=days[4]), weekend]), raw / "mixed.parquet")
    write(day_bars(("600000.SH",), day=days[4]).drop("amount"), raw / "no_amount.parquet")
    store = tmp_path / f"store{chunk_days}"
    rep = ingest_bars(
        raw,
        store,
        session=A_SHARE,
        chunk_days=chunk_days,
        policy=IngestPolicy(on_non_trading_day="drop", on_conflict="replace"),
    )
    assert rep.rows_read == 4 * 32 + 32 + 16
    assert rep.dropped["non_trading_day_rows"] == 16
    assert rep.notes == [
        "amount derived as close x volume for 1 file(s) without an 'amount' column"
    ]
    assert (rep.first_date, rep.last_date) == (days[0], days[4])
    assert scan_store(store).collect().height == 4 * 32 + 16


def test_refusals_still_count_every_file_and_come_first(tmp_path):
    """A validation error in the first file does not hide a whole-input refusal found in a
    later one; its count covers every file."""
    days = next_days(4)
    raw = _day_files(tmp_path, days)
    bad = day_bars(("600000.SH", "600001.SH"), day=days[0]).with_columns(
        pl.when(pl.col("ts") == pl.col("ts").min()).then(-1.0).otherwise(pl.col("close"))
        .alias("close")
    )  # fmt: skip
    write(bad, raw / f"{days[0]}.parquet")
    with pytest.raises(ValueRangeError):
        ingest_bars(raw, tmp_path / "s0", session=A_SHARE)
    for d in days[2:]:  # an unplaceable code in two later files
        write(day_bars(("600000.SH", "XYZ"), day=d), raw / f"{d}.parquet")
    with pytest.raises(SymbolFormatError) as err:
        ingest_bars(raw, tmp_path / "s1", session=A_SHARE)
    assert f"{days[2]}.parquet" in str(err.value)  # the first file with it, not the first bad
    for d in days[2:]:
        write(day_bars(("600000.SH",), day=d, volume=10.0).with_columns(
            pl.col("amount") * 100), raw / f"{d}.parquet")  # fmt: skip
    with pytest.raises(UnitsError):
        ingest_bars(raw, tmp_path / "s2", session=A_SHARE)
    write(day_bars(("600000.SH",), day=days[2]), raw / f"{days[2]}.parquet")
    write(day_bars(("600000.SH",), day=days[3]), raw / f"{days[3]}.parquet")
    write(day_bars(("600000.SH",), day="2025-01-04"), raw / "sat.parquet")
    write(day_bars(("600001.SH",), day="2025-01-05"), raw / "sun.parquet")
    with pytest.raises(NonTradingDayError) as err:
        ingest_bars(raw, tmp_path / "s3", session=A_SHARE)
    assert err.value.count == 32 and "2 date(s)" in str(err.value)
    assert not (tmp_path / "s0").exists() and not (tmp_path / "s3").exists()


def test_lookahead_gives_results_in_order_and_errors_at_their_turn():
    """Work finishing out of order is taken in order; an error surfaces when its item is
    taken (not earlier), and closing after it leaves no thread running."""
    import time as _time
    from pathlib import Path

    from rotation_dl.data.ingest import Lookahead

    started: list[str] = []

    def work(path: Path, size: int | None) -> tuple[str, int | None]:
        started.append(path.name)
        _time.sleep(0.03 if path.name == "a" else 0.0)  # the first finishes last
        if path.name == "c":
            raise ValueRangeError("bad", file=str(path))
        return path.name, size

    paths = [Path(n) for n in "abcde"]
    ahead = Lookahead(work, paths, workers=2)
    assert ahead.take(paths[0], None) == ("a", None)
    assert started == ["a"]  # the bar size unknown: one file at a time
    assert ahead.take(paths[1], 5) == ("b", 5)
    with pytest.raises(ValueRangeError):
        ahead.take(paths[2], 5)
    ahead.close()
    assert "e" not in started or len(started) <= 5
    with pytest.raises(RuntimeError, match="out of order"):
        Lookahead(work, paths).take(paths[1], None)


def test_files_read_ahead_fail_in_order_and_leave_nothing(tmp_path):
    """Many one-day files validated ahead on worker threads: the first bad file in file order
    is named (a later, worse file is not), its error is the serial one word for word, and no
    store is left."""
    days = next_days(8)
    raw = _day_files(tmp_path, days)
    dup = day_bars(("600000.SH", "600001.SH"), day=days[3])
    write(pl.concat([dup, dup.head(1)]).sort("symbol", "ts"), raw / f"{days[3]}.parquet")
    nan = day_bars(("600000.SH", "600001.SH"), day=days[5]).with_row_index("_row")
    write(_at_row_7(nan, "close", float("nan")).drop("_row"), raw / f"{days[5]}.parquet")
    errors = []
    for chunk_days in (None, 1000):  # read ahead whole, or profiled first and read serially
        with pytest.raises(DuplicateRowsError) as err:
            ingest_bars(raw, tmp_path / f"s{chunk_days}", session=A_SHARE, chunk_days=chunk_days)
        errors.append(str(err.value))
        assert not (tmp_path / f"s{chunk_days}").exists()
    assert f"{days[3]}.parquet" in errors[0] and errors[0] == errors[1]


def test_a_bar_size_change_read_ahead_is_the_serial_error(tmp_path):
    days = next_days(6)
    raw = _day_files(tmp_path, days)
    write(day_bars(("600000.SH",), day=days[4], bar_minutes=5), raw / f"{days[4]}.parquet")
    errors = []
    for chunk_days in (None, 1000):
        with pytest.raises(BarSizeError) as err:
            ingest_bars(raw, tmp_path / f"s{chunk_days}", session=A_SHARE, chunk_days=chunk_days)
        errors.append(str(err.value))
    assert f"{days[4]}.parquet" in errors[0] and errors[0] == errors[1]


def test_many_files_read_ahead_store_the_same_rows(tmp_path):
    """Read ahead (files whole) or serially (chunk_days): the same store, report and limit
    tally, over files with a suspension, a zero-price bar and a price move beyond the limit."""
    days = next_days(9)
    symbols = ("600000.SH", "600001.SH", "300001.SZ")
    raw = tmp_path / "raw"
    for k, d in enumerate(days):
        bars = day_bars(symbols, day=d, price=10.0 * (1.3 if k >= 6 else 1.0))
        if k == 2:
            bars = _suspend(bars, "600001.SH", d)
        if k == 4:
            bars = _zero_bar(bars.with_row_index("_row"), 5).drop("_row")
        write(bars, raw / f"{d}.parquet")
    reports, stores = [], []
    for chunk_days in (None, 1000):
        store = tmp_path / f"s{chunk_days}"
        reports.append(ingest_bars(raw, store, session=A_SHARE, chunk_days=chunk_days))
        stores.append(scan_store(store).collect().sort("symbol", "ts"))
    a, b = reports
    assert (a.rows_read, a.rows_added, a.dropped) == (b.rows_read, b.rows_added, b.dropped)
    assert a.dropped["suspended_day_bars"] == 16 and a.dropped["zero_price_bars"] == 1
    assert a.limit_breaks == b.limit_breaks and a.limit_breaks["breaks"] == 3
    assert_frame_equal(stores[0], stores[1])


# ---- the industry kernel against the polars formulation ------------------------------------


def _stock_bars(seed: int = 3) -> pl.DataFrame:
    """Twelve stocks over six days of 30-minute bars: untraded bars, a placeholder with zero
    close, a stock listed on day 3, one suspended on day 4 (no rows)."""
    rng = np.random.default_rng(seed)
    frames = []
    syms = [f"{600000 + k:06d}.SH" for k in range(12)]
    for d in next_days(6):
        for k, sym in enumerate(syms):
            if (k == 11 and d < next_days(6)[2]) or (k == 5 and d == next_days(6)[3]):
                continue
            bars = day_bars((sym,), day=d, bar_minutes=30, price=5.0 + k)
            n = bars.height
            move = np.exp(np.cumsum(rng.normal(0, 0.004, n)) + 0.01 * k)
            vol = rng.integers(0, 4, n) * 100.0
            frames.append(
                bars.with_columns(
                    (pl.col(c) * move * (1 + s)).alias(c)
                    for c, s in (("open", 0.0), ("high", 0.002), ("low", -0.002), ("close", 0.0))
                ).with_columns(
                    pl.Series("volume", vol),
                    (pl.col("close") * pl.Series(vol) * (1 + rng.normal(0, 1e-3, n))).alias(
                        "amount"
                    ),
                )
            )
    bars = pl.concat(frames)
    bars = bars.with_columns(  # a feed placeholder: no positive close
        pl.when((pl.col("symbol") == syms[2]) & (pl.col("ts") == pl.col("ts").max()))
        .then(0.0).otherwise(pl.col("close")).alias("close")
    )  # fmt: skip
    # store order: by day, then symbol, then time
    return bars.sort(pl.col("ts").dt.date(), "symbol", "ts")


def _classification(point_in_time: bool) -> pl.DataFrame:
    syms = [f"{600000 + k:06d}.SH" for k in range(12)]
    rows = [(s, f"IND{k % 3}", None, None) for k, s in enumerate(syms) if k != 9]
    if point_in_time:  # stock 4 moves from IND1 to IND9 (a new industry) on day 4
        d = [date.fromisoformat(x) for x in next_days(6)]
        rows = [r for r in rows if r[0] != syms[4]]
        rows += [(syms[4], "IND1", None, d[2]), (syms[4], "IND9", d[3], None)]
    return pl.DataFrame(
        rows, schema={"symbol": pl.String, "industry": pl.String, "start": pl.Date,
                      "end": pl.Date}, orient="row",
    )  # fmt: skip


def _polars_chunk(bars, cls, known, weighting, prev_close, start_level):
    stock = stock_bar_returns(
        map_industries(bars.lazy(), cls, "drop"), presorted=True, prev_close=prev_close
    ).collect()
    industries = sorted(known | set(stock["industry"].unique().to_list()))
    agg = aggregate_industry_returns(stock.lazy(), weighting)
    return add_return_index(
        agg, industries, stock["ts"].unique(), weighting, start_level
    ).collect()


def test_industry_kernel_reads_a_frame_of_many_chunks_like_one():
    """A store read of several partitions arrives in several chunks per column; the kernel
    copies only the numeric columns it needs into arrays and gives the same bars."""
    bars = add_vwap_gap(_stock_bars().lazy()).collect().rechunk()
    cuts = [0, 7, bars.height // 2, bars.height - 3, bars.height]
    pieces = pl.concat([bars[a:b] for a, b in itertools.pairwise(cuts)], rechunk=False)
    assert pieces.n_chunks("all") == [4] * bars.width
    cls = _classification(True)
    want = industry_chunk(bars, cls, set(), weighting="amount", on_unmapped="drop")
    got = industry_chunk(pieces, cls, set(), weighting="amount", on_unmapped="drop")
    assert_frame_equal(got.bars, want.bars)
    assert_frame_equal(got.last_close, want.last_close)
    assert got.industries == want.industries


@pytest.mark.parametrize("weighting", ["equal", "amount"])
@pytest.mark.parametrize("point_in_time", [False, True])
def test_industry_kernel_equals_the_polars_formulation(weighting, point_in_time):
    bars = add_vwap_gap(_stock_bars().lazy()).collect()
    cls = _classification(point_in_time)
    days = bars["ts"].dt.date().unique().sort()
    first, second = (bars.filter(pl.col("ts").dt.date().is_in(days[:3].implode())),
                     bars.filter(pl.col("ts").dt.date().is_in(days[3:].implode())))  # fmt: skip
    got = industry_chunk(first, cls, set(), weighting=weighting, on_unmapped="drop")
    want = _polars_chunk(first, cls, set(), weighting, None, None)
    assert_frame_equal(got.bars, want, check_exact=False, rel_tol=1e-12, abs_tol=1e-14)
    assert got.industries == ["IND0", "IND1", "IND2"]
    # the second chunk carries each stock's last close and each index level across
    level = want.group_by("industry").agg(pl.col("close").sort_by("ts").last().alias("level"))
    got2 = industry_chunk(
        second, cls, set(got.industries), weighting=weighting, on_unmapped="drop",
        prev_close=got.last_close, start_level=level,
    )  # fmt: skip
    want2 = _polars_chunk(second, cls, set(got.industries), weighting, got.last_close, level)
    assert_frame_equal(got2.bars, want2, check_exact=False, rel_tol=1e-12, abs_tol=1e-14)
    assert ("IND9" in got2.industries) == point_in_time
    last = (first.filter(pl.col("close") > 0).group_by("symbol")
            .agg(pl.col("close").last().alias("prev_close")))  # fmt: skip
    unmapped = "600009.SH"
    assert_frame_equal(
        got.last_close.sort("symbol"),
        last.filter(pl.col("symbol") != unmapped).sort("symbol"),
    )


def test_unmapped_symbols_are_refused_with_the_polars_error():
    bars = add_vwap_gap(_stock_bars().lazy()).collect()
    cls = _classification(False)
    with pytest.raises(Exception) as kernel:
        industry_chunk(bars, cls, set(), on_unmapped="fail")
    with pytest.raises(Exception) as reference:
        industry_bars(bars.lazy(), cls, presorted=True).collect()
    assert type(kernel.value) is type(reference.value)
    assert str(kernel.value) == str(reference.value)


def test_sub_minute_stamps_take_the_sorted_bar_index():
    bars = add_vwap_gap(_stock_bars().lazy()).collect()
    shifted = bars.with_columns(pl.col("ts") + timedelta(seconds=30))
    cls = _classification(False)
    got = industry_chunk(shifted, cls, set(), on_unmapped="drop")
    want = _polars_chunk(shifted, cls, set(), "equal", None, None)
    assert_frame_equal(got.bars, want, check_exact=False, rel_tol=1e-12, abs_tol=1e-14)
    assert got.bars["ts"].dt.second().unique().to_list() == [30]


def test_no_positive_close_gives_no_chunk():
    bars = add_vwap_gap(_stock_bars().lazy()).collect().with_columns(pl.lit(0.0).alias("close"))
    assert industry_chunk(bars, _classification(False), set(), on_unmapped="drop") is None
