"""The README is executable truth: every ```bash block runs as written, in a fresh folder, on
the sample market or on files generated here (`# docs-test: fixture NAME`); a block on the real
data runs when it is present (`# docs-test: real_data`); one that needs a GPU, a cluster or
minutes of compute says `# docs-test: skip REASON` and is skipped with that reason."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import REPO, data_root

from rotation_dl.data.calendar import trading_days
from rotation_dl.data.resample import resample_bars
from rotation_dl.session import A_SHARE
from rotation_dl.synthetic.market import SampleConfig, make_sample_market

BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
DIRECTIVE = re.compile(r"^# docs-test: (skip|fixture|real_data)(?: (\S+))?(.*)$", re.M)


def readme_blocks() -> list[tuple[str, str]]:
    text = (REPO / "README.md").read_text()
    return [(f"block{k:02d}", b) for k, b in enumerate(BLOCK.findall(text))]


# ---- fixtures ------------------------------------------------------------------------------
def _sample(n_days: int, n_stocks: int = 24):
    return make_sample_market(
        SampleConfig(n_industries=4, n_stocks=n_stocks, n_days=n_days, seed=3, calendar="XSHG")
    )


def _industries(market, path: Path) -> None:
    market.classification.select(pl.col("symbol").str.slice(0, 6), "industry").write_csv(path)


def _daily(market) -> pl.DataFrame:
    bars = market.bars.filter(pl.col("close") > 0).lazy()
    return resample_bars(bars, "1d", A_SHARE).collect().sort("symbol", "date")


def fixture_minute_csv(root: Path) -> None:
    m = _sample(25, 12)
    out = root / "my_bars"
    out.mkdir()
    bars = m.bars.select(
        pl.col("symbol").str.slice(0, 6).alias("code"),
        pl.col("ts").alias("datetime"),
        "open", "high", "low", "close",
        (pl.col("volume") / 100).alias("volume"),  # lots of 100 shares
        "amount",
    )  # fmt: skip
    for (day,), part in bars.group_by(pl.col("datetime").dt.date(), maintain_order=True):
        part.write_csv(out / f"{day}.csv")
    _industries(m, root / "my_industries.csv")


def _tdx_text(code: str, name: str, rows: pl.DataFrame) -> bytes:
    lines = [f"{code} {name} 日线 不复权", "日期\t开盘\t最高\t最低\t收盘\t成交量\t成交额"]
    for r in rows.iter_rows(named=True):
        lines.append(
            f"{r['date']:%Y/%m/%d}\t{r['open']:.2f}\t{r['high']:.2f}\t{r['low']:.2f}\t"
            f"{r['close']:.2f}\t{r['volume']:.0f}\t{r['amount']:.2f}"
        )
    lines.append("数据来源:通达信")
    return ("\r\n".join(lines) + "\r\n").encode("gbk")


def _tdx_day(rows: pl.DataFrame) -> bytes:
    out = b""
    for r in rows.iter_rows(named=True):
        cents = [round(r[c] * 100) for c in ("open", "high", "low", "close")]
        ymd = int(f"{r['date']:%Y%m%d}")
        out += struct.pack("<IIIIIfII", ymd, *cents, r["amount"], int(r["volume"]), 0)
    return out


def fixture_tdx(root: Path) -> None:
    m = _sample(90)
    daily = _daily(m)
    out = root / "tdx_export"
    out.mkdir()
    for k, ((sym,), rows) in enumerate(daily.group_by("symbol", maintain_order=True)):
        code, ex = sym.split(".")
        if k % 2:
            (out / f"{ex}#{code}.txt").write_bytes(_tdx_text(code, "样本股票", rows))
        else:
            (out / f"{ex.lower()}{code}.day").write_bytes(_tdx_day(rows))
    _industries(m, root / "industries.csv")


def fixture_vendor_csv(root: Path) -> None:
    m = _sample(90)
    daily = _daily(m).join(m.adj_factors, on=["symbol", "date"], how="left")
    daily = daily.with_columns(pl.col("factor").forward_fill().over("symbol").fill_null(1.0))
    prev = (pl.col("close") * pl.col("factor")).shift(1).over("symbol") / pl.col("factor")
    daily.select(
        pl.col("symbol").str.slice(0, 6).alias("代码"),
        pl.col("date").alias("日期"),
        pl.col("open").alias("开盘"),
        pl.col("high").alias("最高"),
        pl.col("low").alias("最低"),
        pl.col("close").alias("收盘"),
        (pl.col("volume") / 100).alias("成交量"),  # lots
        pl.col("amount").alias("成交额"),
        prev.alias("昨收"),  # the exchange's previous close: adjusted on ex-dates
    ).write_csv(root / "vendor_daily.csv")
    _industries(m, root / "industries.csv")


def fixture_us_daily(root: Path) -> None:
    rng = np.random.default_rng(11)
    days = trading_days(date(2024, 1, 2), 90, "XNYS")
    tickers = ["AAPL", "MSFT", "NVDA", "AMZN", "META", "GOOGL", "JPM", "BAC", "XOM", "CVX", "JNJ",
               "PFE", "KO", "PEP", "WMT", "COST"]  # fmt: skip
    rows = []
    for t in tickers:
        px = 100 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, len(days))))
        vol = rng.integers(1_000_000, 5_000_000, len(days))
        for d, p, v in zip(days, px, vol, strict=True):
            rows.append((t, d, p, p * 1.01, p * 0.99, p, float(v), float(v) * p))
    pl.DataFrame(
        rows,
        schema=["symbol", "date", "open", "high", "low", "close", "volume", "amount"],
        orient="row",
    ).write_csv(root / "us_daily.csv")
    sectors = ["Tech"] * 6 + ["Banks"] * 2 + ["Energy"] * 2 + ["Health"] * 2 + ["Staples"] * 4
    pl.DataFrame({"symbol": tickers, "industry": sectors}).write_csv(root / "sectors.csv")


def fixture_sector_etfs(root: Path) -> None:
    """sector_etfs.csv as a price site gives it: ticker, Date, raw OHLC, Adj Close (quarterly
    payouts), Volume; 11 sector series over 300 NYSE days."""
    from rotation_dl.synthetic.market import SampleConfig
    from rotation_dl.synthetic.series import make_series_market

    cfg = SampleConfig(n_industries=11, n_days=300, bar_minutes=0, start="2023-01-03",
                       calendar="XNYS")  # fmt: skip
    bars = make_series_market(cfg).bars.sort("symbol", "ts")
    quarter = pl.col("ts").dt.quarter() + 4 * pl.col("ts").dt.year()
    raw_over_adj = 1.004 ** (quarter.max() - quarter)  # 0.4% a quarter paid out: adj <= raw
    bars.select(
        pl.col("symbol").alias("ticker"),
        pl.col("ts").dt.date().alias("Date"),
        *[(pl.col(c) * raw_over_adj).round(2).alias(c.title()) for c in ("open", "high", "low")],
        (pl.col("close") * raw_over_adj).round(2).alias("Close"),
        pl.col("close").alias("Adj Close"),
        pl.col("volume").alias("Volume"),
    ).write_csv(root / "sector_etfs.csv")


FIXTURES = {
    "sector_etfs": fixture_sector_etfs,
    "minute_csv": fixture_minute_csv,
    "tdx": fixture_tdx,
    "vendor_csv": fixture_vendor_csv,
    "us_daily": fixture_us_daily,
}


def test_every_block_is_run_or_says_why_not():
    blocks = readme_blocks()
    assert len(blocks) >= 8
    for name, text in blocks:
        d = DIRECTIVE.search(text)
        if d and d.group(1) == "fixture":
            assert d.group(2) in FIXTURES, (name, d.group(2))
        if d and d.group(1) == "skip":
            assert (d.group(2) or "").strip(), f"{name}: a skip needs a reason"
        if not d:
            assert "rotation-dl" in text, name


@pytest.mark.slow
@pytest.mark.parametrize("name, text", readme_blocks(), ids=[n for n, _ in readme_blocks()])
def test_readme_block_runs_as_written(name, text, tmp_path):
    d = DIRECTIVE.search(text)
    if d and d.group(1) == "skip":
        pytest.skip(f"README {name}: {(d.group(2) + d.group(3)).strip()}")
    if d and d.group(1) == "real_data" and not (data_root() / "README.md").exists():
        pytest.skip(f"README {name}: real data not found at {data_root()}")
    if d and d.group(1) == "fixture":
        FIXTURES[d.group(2)](tmp_path)
    script = tmp_path / "block.sh"
    script.write_text("set -euo pipefail\n" + text)
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "ROTATION_DL_CONF_DIR"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["ROTATION_DL_DATA_ROOT"] = str(data_root().resolve())
    proc = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, f"{name}:\n{text}\n{proc.stdout[-1500:]}\n{proc.stderr[-2500:]}"
