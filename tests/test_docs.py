"""The README and the documentation pages (docs/*.md) are executable truth: every ```bash
block runs as written, in a fresh folder, on the sample market or on files generated here
(`# docs-test: fixture NAME`); a block on the real data runs when it is present
(`# docs-test: real_data`); one that needs a GPU, a cluster or minutes of compute says
`# docs-test: skip REASON` and is skipped with that reason. The architecture page's "where to
change what" table names only files and names that exist."""

from __future__ import annotations

import os
import re
import shutil
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


DOC_PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def readme_blocks() -> list[tuple[str, str]]:
    """(id, text) of every bash block of the README and the docs pages, in page order."""
    blocks = []
    for page in DOC_PAGES:
        for k, b in enumerate(BLOCK.findall(page.read_text())):
            blocks.append((f"{page.stem}-block{k:02d}", b))
    return blocks


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


def fixture_chinese_classification(root: Path) -> None:
    m = _sample(25, 12)
    out = root / "bars"
    out.mkdir()
    for (day,), part in m.bars.group_by(pl.col("ts").dt.date(), maintain_order=True):
        part.write_parquet(out / f"{day}.parquet")
    m.classification.select(
        pl.col("symbol").str.slice(0, 6).alias("股票代码"),
        pl.col("industry").alias("申万一级行业"),
        pl.lit("2020-01-01").alias("纳入日期"),
    ).write_csv(root / "industries_cn.csv")


FIXTURES = {
    "sector_etfs": fixture_sector_etfs,
    "minute_csv": fixture_minute_csv,
    "tdx": fixture_tdx,
    "vendor_csv": fixture_vendor_csv,
    "us_daily": fixture_us_daily,
    "chinese_classification": fixture_chinese_classification,
}


def test_every_block_is_run_or_says_why_not():
    blocks = readme_blocks()
    assert len(blocks) >= 15
    assert {n.split("-block")[0] for n, _ in blocks} >= {"README", "getting-started", "data"}
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
        pytest.skip(f"{name}: {(d.group(2) + d.group(3)).strip()}")
    if d and d.group(1) == "real_data" and not (data_root() / "README.md").exists():
        pytest.skip(f"{name}: real data not found at {data_root()}")
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


def where_to_change_rows() -> list[str]:
    text = (REPO / "docs" / "architecture.md").read_text()
    table = text.split("## Where to change what", 1)[1].split("\n## ", 1)[0]
    return [r for r in table.splitlines() if r.startswith("| ") and not r.startswith("| to add")]


def _file(path: str) -> Path | None:
    """A path from the table, relative to the repository or to rotation_dl/."""
    for candidate in (REPO / path, REPO / "rotation_dl" / path):
        if candidate.exists():
            return candidate
    return None


def test_where_to_change_what_names_files_and_names_that_exist():
    """Every file a row names exists (`<name>` placeholders aside), `file.py:Name` and
    `package.module.Name` name something in that module, and every other name in backticks is
    found in one of the row's files."""
    rows = where_to_change_rows()
    assert len(rows) >= 12
    for row in rows:
        ticks = re.findall(r"`([^`]+)`", row)
        files, names = [], []
        for t in ticks:
            path, _, name = t.partition(":")
            dotted = t.split(".")
            if re.fullmatch(r"[\w/<>]+\.(py|toml|yaml)", path):
                if "<" in path:
                    continue
                found = _file(path)
                assert found is not None, f"{path} does not exist: {row}"
                files.append(found)
                if name:
                    assert name in found.read_text(), f"{name} not in {path}: {row}"
            elif len(dotted) >= 2 and _file("/".join(dotted[:-1]) + ".py"):
                module = _file("/".join(dotted[:-1]) + ".py")
                assert dotted[-1] in module.read_text(), f"{t}: not in {module}: {row}"
            elif len(dotted) >= 2 and _file("/".join(dotted) + ".py"):
                pass  # a module named by its dotted path
            elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\(\))?", t):
                names.append(t.removesuffix("()"))
        source = "\n".join(f.read_text() for f in files)
        for name in names:
            assert name in source, f"`{name}` is in none of {files}: {row}"


MKDOCS = Path(sys.executable).with_name("mkdocs")


def build_site(root: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--config-file", str(root / "mkdocs.yml"),
         "--site-dir", str(site)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


@pytest.mark.skipif(not MKDOCS.exists(), reason="mkdocs is not installed (the dev extra)")
def test_the_site_builds_strictly_and_a_broken_link_fails_it(tmp_path):
    ok = build_site(REPO, tmp_path / "site")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "site" / "architecture" / "index.html").exists()
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "docs", copy / "docs")
    shutil.copy(REPO / "mkdocs.yml", copy / "mkdocs.yml")
    page = copy / "docs" / "index.md"
    page.write_text(page.read_text() + "\nSee [the cycle](cycle.md#weekly).\n")
    broken = build_site(copy, tmp_path / "site2")
    assert broken.returncode != 0 and "cycle.md" in broken.stderr
