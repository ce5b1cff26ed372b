"""Prices are adjusted, or the user is stopped: board limits, listing and resumption days, and
a daily store that honours `data.adjustment` (fixtures made here)."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

import numpy as np
import polars as pl
import pytest
from conftest import REPO

from rotation_dl.data.calendar import trading_days
from rotation_dl.data.limits import check_adjusted, limit_breaks
from rotation_dl.errors import AdjustmentError


def _series(symbol: str, closes: list[float], days: list[date]) -> pl.DataFrame:
    return pl.DataFrame({"symbol": symbol, "date": days[: len(closes)], "close": closes})


def test_limit_rules_hand_case():
    days = trading_days(date(2024, 3, 4), 12)
    flat = [10.0] * 12
    main = flat[:8] + [7.0, 7.0, 7.0, 7.0]  # -30% on day 8: a main-board break
    chinext = flat[:8] + [11.5] * 4  # +15% on ChiNext: inside its 20% limit
    listing = [10.0, 14.4, 17.0, *[17.0] * 9]  # big moves in the first listing days only
    frames = [
        _series("600000.SH", main, days),
        _series("300750.SZ", chinext, days),
        _series("603999.SH", listing, days),
        _series("830799.BJ", flat[:8] + [12.5] * 4, days),  # +25% under Beijing's 30%
        # a resumption: bars stop after day 3 and come back on day 8, +40%
        pl.DataFrame(
            {"symbol": "600001.SH", "date": days[:4] + days[8:], "close": [10.0] * 4 + [14.0] * 4}
        ),
    ]
    res = limit_breaks(pl.concat(frames))
    assert res.breaks.select("symbol", "date").rows() == [("600000.SH", days[8])]
    assert res.breaks["move"][0] == pytest.approx(-0.3)
    assert res.examples() == [f"600000.SH {days[8]} -30.0%"]


def _market(n_stocks: int = 30, n_days: int = 120, seed: int = 3, pre_close: bool = False):
    """Daily bars with a 2-for-1 split in a third of the stocks, unadjusted, plus the factors
    that adjust them (adjusted = raw x factor)."""
    rng = np.random.default_rng(seed)
    days = trading_days(date(2024, 3, 1), n_days, "XSHG")
    rows, factors = [], []
    for s in range(n_stocks):
        sym = f"{600100 + s}"
        px = 10 * np.exp(np.cumsum(rng.normal(0, 0.015, n_days)))
        split = 60 + s % 30 if s % 3 == 0 else None
        raw = px.copy()
        if split is not None:
            raw[split:] /= 2
            factors += [{"symbol": sym, "date": days[split], "factor": 2.0}]
        factors += [{"symbol": sym, "date": days[0], "factor": 1.0}]
        prev = np.concatenate([[raw[0]], raw[:-1]])
        if split is not None:
            prev[split] /= 2  # the exchange's previous close on the ex-date is split-adjusted
        for d, p, pc in zip(days, raw, prev, strict=True):
            row = {
                "code": sym,
                "date": d,
                "open": p,
                "high": p * 1.01,
                "low": p * 0.99,
                "close": p,
                "volume": 1e6,
                "amount": 1e6 * p,
            }
            rows.append({**row, "pre_close": pc} if pre_close else row)
    return pl.DataFrame(rows), pl.DataFrame(factors)


def test_check_adjusted_refuses_unadjusted_and_passes_adjusted():
    bars, factors = _market()
    daily = bars.select(pl.col("code").alias("symbol") + ".SH", "date", "close")
    with pytest.raises(AdjustmentError) as err:
        check_adjusted(daily, "daily.parquet")
    msg = str(err.value)
    assert "10 stock-days" in msg and "data.adjustment" in msg and "on_unadjusted=warn" in msg
    warned = check_adjusted(daily, "daily.parquet", on_unadjusted="warn")
    assert warned.breaks.height == 10
    adj = daily.join(
        factors.with_columns(pl.col("symbol") + ".SH"), on=["symbol", "date"], how="left"
    )
    adj = adj.sort("symbol", "date").with_columns(
        (pl.col("close") * pl.col("factor").forward_fill().over("symbol")).alias("close")
    )
    assert check_adjusted(adj, "adjusted").breaks.height == 0


def _write_case(tmp_path, bars: pl.DataFrame, factors: pl.DataFrame) -> list[str]:
    """The market's files and classification under tmp_path; the CLI overrides that read them."""
    bars.write_parquet(tmp_path / "daily.parquet")
    factors.write_parquet(tmp_path / "adj.parquet")
    cls = pl.DataFrame(
        {"symbol": bars["code"].unique().sort(), "industry": [f"I{k % 5}" for k in range(30)]}
    )
    cls.write_csv(tmp_path / "cls.csv")
    return [
        "data=parquet", f"data.bars={tmp_path / 'daily.parquet'}",
        f"data.classification={tmp_path / 'cls.csv'}",
        "data.mapping.columns={symbol: code, ts: date}", "baseline.k=10",
    ]  # fmt: skip


def test_baseline_on_an_unadjusted_daily_store_stops_and_honours_factors(tmp_path):
    bars, factors = _market()
    common = _write_case(tmp_path, bars, factors)

    def run(*extra, out):
        return subprocess.run(
            [sys.executable, "-m", "rotation_dl.cli", "baseline", *common, *extra,
             f"paths.output_dir={tmp_path / out}"],
            cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip

    refused = run(out="raw")
    assert refused.returncode == 2, refused.stderr[-2000:]
    err = refused.stderr.strip().splitlines()[-1]  # earlier lines: the ingest's INFO logs
    assert (
        err.startswith("rotation-dl baseline: error: AdjustmentError") and "10 stock-days" in err
    )
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "raw" / "baseline").exists()
    ok = run(f"data.adjustment={tmp_path / 'adj.parquet'}", out="adj")
    assert ok.returncode == 0, ok.stderr[-2000:]
    knowingly = run("data.on_unadjusted=warn", out="warn")
    assert knowingly.returncode == 0, knowingly.stderr[-2000:]
    a, w = (
        pl.read_parquet(tmp_path / o / "baseline" / "di_multi_horizon.parquet")
        for o in ("adj", "warn")
    )
    assert not a.equals(w), "the adjustment factors must change the DI of a daily store"


def test_a_pre_close_column_adjusts_a_daily_store(tmp_path):
    """Vendor daily files with the exchange's previous close need no factor file: factors come
    from it, and the DI equals the one computed with explicit factors."""
    bars, factors = _market(pre_close=True)
    common = _write_case(tmp_path, bars, factors)
    for out, extra in (("pc", []), ("adj", [f"data.adjustment={tmp_path / 'adj.parquet'}"])):
        proc = subprocess.run(
            [sys.executable, "-m", "rotation_dl.cli", "baseline", *common, *extra,
             f"paths.output_dir={tmp_path / out}"],
            cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
    pc, adj = (
        pl.read_parquet(tmp_path / o / "baseline" / "di_multi_horizon.parquet")
        for o in ("pc", "adj")
    )
    assert pc.equals(adj)
    stored = pl.read_parquet(next((tmp_path / "pc" / "store").rglob("*.parquet")))
    assert stored["pre_close"].is_not_null().all()


@pytest.mark.parametrize("batch_rows", [1, 30, 100_000])
@pytest.mark.parametrize("chunk", [1, 7, 40, 500])
def test_ingest_tally_in_chunks_equals_the_whole_series(chunk, batch_rows):
    """The count ingest records chunk by chunk (carrying each stock's last close and listing
    age) equals the count over the whole series, with a split, a listing and a resumption;
    counted per chunk (batch_rows=1) or with chunks buffered together."""
    from rotation_dl.data.limits import LimitTally

    bars, _ = _market(n_stocks=12, n_days=90)
    daily = (
        bars.select(pl.col("code").alias("symbol") + ".SH", "date", "close", "volume")
        .filter(~((pl.col("symbol") == "600101.SH") & pl.col("date").is_between(
            date(2024, 4, 1), date(2024, 4, 12))))  # a suspension: resumption not counted
        .filter(~((pl.col("symbol") == "600102.SH") & (pl.col("date") < date(2024, 5, 6))))
        .sort("symbol", "date")
    )  # fmt: skip
    whole = limit_breaks(daily)
    days = sorted(daily["date"].unique().to_list())
    tally = LimitTally(days, batch_rows=batch_rows)
    for i in range(0, len(days), chunk):
        tally.add(daily.filter(pl.col("date").is_in(days[i : i + chunk])))
    got = tally.result()
    assert got.stock_days == whole.stock_days and got.breaks.height == whole.breaks.height == 4
    assert sorted(got.examples(10)) == sorted(whole.examples(10))


def test_ingest_records_raw_limit_breaks_in_the_store(tmp_path):
    import json

    from rotation_dl.data.ingest import ingest_bars
    from rotation_dl.data.readers import ColumnMapping
    from rotation_dl.session import A_SHARE

    bars, _ = _market()
    bars.write_parquet(tmp_path / "daily.parquet")
    rep = ingest_bars(
        tmp_path / "daily.parquet",
        tmp_path / "store",
        ColumnMapping(columns={"symbol": "code", "ts": "date"}),
        session=A_SHARE,
        calendar="XSHG",
    )
    assert rep.limit_breaks["breaks"] == 10
    assert "10 raw move(s) beyond the daily price limit" in rep.summary()
    record = json.loads((tmp_path / "store" / "_limits.json").read_text())
    assert record["ingests"][-1]["breaks"] == 10 and len(record["ingests"][-1]["examples"]) == 5


def test_industry_build_refuses_unadjusted_splits_before_writing(tiny_market, tmp_path):
    """The industry-bars build checks the adjusted closes it streams: unadjusted 2-for-1 splits
    stop it before anything is written; the same bars with factors pass."""
    from rotation_dl.data.ingest import ingest_bars
    from rotation_dl.industry.build import build_industry_bars
    from rotation_dl.session import A_SHARE

    bars = tiny_market.bars.filter(pl.col("close") > 0)
    days = bars["ts"].dt.date().unique().sort()
    split_day = days[15]
    split = sorted(bars["symbol"].unique().to_list())[::3]
    later = pl.col("symbol").is_in(split) & (pl.col("ts").dt.date() >= split_day)
    raw = bars.with_columns(
        [pl.when(later).then(pl.col(c) / 2).otherwise(pl.col(c)).alias(c)
         for c in ("open", "high", "low", "close")]
    )  # fmt: skip
    raw.write_parquet(tmp_path / "bars.parquet")
    ingest_bars(tmp_path / "bars.parquet", tmp_path / "store", session=A_SHARE)
    tiny_market.classification.write_parquet(tmp_path / "cls.parquet")
    factors = pl.DataFrame(
        {"symbol": split, "date": [split_day] * len(split), "factor": [2.0] * len(split)}
    )
    factors.write_parquet(tmp_path / "adj.parquet")
    common = dict(session=A_SHARE, max_limit_breaks_per_10k=1.0)
    out = tmp_path / "ib.parquet"
    with pytest.raises(AdjustmentError, match=f"{len(split)} stock-days"):
        build_industry_bars(tmp_path / "store", tmp_path / "cls.parquet", out, **common)
    assert not out.exists()
    res = build_industry_bars(
        tmp_path / "store", tmp_path / "cls.parquet", out, adjustment=tmp_path / "adj.parquet",
        chunk_partitions=4, **common,
    )  # fmt: skip
    assert out.exists() and res.frame.height > 0
