"""The weekly report: self-contained HTML whose numbers come from the metrics engine, rendered
in headless Chromium (skipped with a reason when Chromium is absent)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import date

import polars as pl
import pytest
from conftest import REPO

from rotation_dl.backtest.metrics import to_date_excess

DEMO = [
    "experiment=demo",
    "data.sample.n_industries=8",
    "data.sample.n_stocks=64",
    "data.sample.n_days=130",
    "walkforward.min_train_days=60",
    "walkforward.retrain_every=20",
    "features.window=5",
    "trainer.max_epochs=2",
    "timing.universe_size=30",
    "logger=none",
]
CHARTS = (
    "chart-scores",
    "chart-di",
    "chart-nav",
    "chart-excess",
    "chart-ic",
    "chart-timing",
    "chart-grid",
)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    args = [f"paths.output_dir={root / 'out'}", f"paths.checkpoints={root / 'ck'}", *DEMO]
    proc = subprocess.run(
        [sys.executable, "-m", "rotation_dl.cli", "demo", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[11/11] weekly report" in proc.stdout
    report = sorted((root / "out" / "report").glob("report_*.html"))[-1]
    assert f"open the report: {report.resolve()}" in proc.stdout
    return root / "out", report


def test_report_is_self_contained(demo_run):
    out, report = demo_run
    page = report.read_text()
    head, rest = page.split("<script>", 1)
    bundle, body = rest.split("</script>", 1)
    assert "Plotly" in bundle and len(bundle) > 1_000_000  # plotly.js bundled inline
    outside = head + body
    assert not re.search(r"<script[^>]*\bsrc\s*=", outside), "no external scripts"
    assert not re.search(r"<link[^>]*\bhref\s*=\s*['\"]https?:", outside)
    for chart in CHARTS:
        assert f'id="{chart}"' in page, chart
    for section in (
        "Holdings in / out",
        "Diffusion index",
        "This month's DI allocation",
        "Performance",
        "calendar years",
        "Rank IC",
        "Micro-cap timing",
        "Factor rank IC",
    ):
        assert section in page, section
    ic_table = page.split('class="ic-table"', 1)[1].split("</table>", 1)[0]
    assert "Newey-West, lag 4" in ic_table and "GRU" in ic_table  # HAC t beside the naive
    md = report.with_suffix(".md").read_text()
    assert md.startswith("# Industry rotation, week ending") and "YTD" in md


def test_report_numbers_come_from_the_engine(demo_run):
    out, report = demo_run
    page = report.read_text()
    asof = date.fromisoformat(report.stem.split("_", 1)[1])
    shown = {
        m: float(v)
        for m, v in re.findall(
            r"data-model='([^']+)'>[^<]*<b class='ytd-excess' data-value='([-0-9.e]+)'", page
        )
    }
    daily = pl.read_parquet(out / "backtest" / "backtest_daily.parquet")
    engine = to_date_excess(daily, asof)["ytd"]["excess_compounded"]
    assert shown["GRU"] == pytest.approx(engine, abs=1e-9)
    data = json.loads(re.search(r"id='report-data'>(.*?)</script>", page, re.S).group(1))
    assert data["performance"]["GRU"]["to_date"]["ytd"]["excess_compounded"] == pytest.approx(
        engine
    )
    pct = f"{engine * 100:+.2f}%"
    assert pct in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium not installed (.ci/run installs it via "
    "apt; locally: apt-get install chromium)",
)
def test_report_renders_in_headless_chromium(demo_run, tmp_path):
    out, report = demo_run
    flags = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=8000",
        "--enable-logging=stderr",
        "--v=0",
    ]
    url = report.resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console_errors = [
        ln
        for ln in dom.stderr.splitlines()
        if "CONSOLE" in ln and ("Error" in ln or "Uncaught" in ln)
    ]
    assert not console_errors, console_errors
    html = dom.stdout
    for chart in CHARTS:
        block = html.split(f'id="{chart}"', 1)[1][:200_000]
        assert "main-svg" in block, f"{chart} did not render"
    assert "YTD excess" in html
    shot = REPO / "outputs" / "artifacts" / "report.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    png = subprocess.run(
        [*flags, "--window-size=1280,3200", f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert png.returncode == 0 and shot.stat().st_size > 50_000


def test_report_reads_the_factors_override(demo_run, tmp_path):
    """`report factors=PATH` backtests and reports that panel, not the run's own."""
    out, _ = demo_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    own = pl.read_parquet(copy / "factor_panel.parquet")
    flipped = own.with_columns(-pl.col("score"))
    flipped.write_parquet(tmp_path / "flipped.parquet")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rotation_dl.cli",
            "report",
            f"paths.output_dir={copy}",
            f"factors={tmp_path / 'flipped.parquet'}",
            *DEMO,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = pl.read_parquet(out / "backtest" / "backtest_holdings.parquet")
    after = pl.read_parquet(copy / "backtest" / "backtest_holdings.parquet")
    assert not before.equals(after), "the flipped panel must choose other holdings"
    report = sorted((copy / "report").glob("report_*.html"))[-1]
    asof = date.fromisoformat(report.stem.split("_", 1)[1])
    daily = pl.read_parquet(copy / "backtest" / "backtest_daily.parquet")
    data = json.loads(
        re.search(r"id='report-data'>(.*?)</script>", report.read_text(), re.S).group(1)
    )
    engine = to_date_excess(daily, asof)["ytd"]["excess_compounded"]
    assert data["performance"]["GRU"]["to_date"]["ytd"]["excess_compounded"] == pytest.approx(
        engine
    )


def test_the_ic_table_compares_models_on_their_common_dates_and_says_against_what():
    """Two factors over different spans: each one's IC comes from the dates both have, and the
    caption names the forward return (one OOS IC definition in the report)."""
    from datetime import date, timedelta

    import numpy as np

    from rotation_dl.backtest.ic import ic_series, summarize_ic
    from rotation_dl.report.weekly import ModelResult, ReportInputs, ic_table

    rng = np.random.default_rng(5)
    days = [date(2024, 1, 1) + timedelta(days=k) for k in range(60)]
    inds = [f"I{k}" for k in range(8)]
    grid = pl.DataFrame(
        {"date": [d for d in days for _ in inds], "industry": inds * len(days)}
    ).with_columns(pl.Series("fwd_excess", rng.normal(size=len(days) * len(inds))))
    full = grid.select("date", "industry", pl.Series("score", rng.normal(size=grid.height)))
    late = full.filter(pl.col("date") >= days[30])
    empty = pl.DataFrame()
    inputs = ReportInputs(
        asof=days[-1],
        models=[ModelResult("A", full, empty, empty), ModelResult("B", late, empty, empty)],
        forward=grid,
        horizon=1,
        forward_label="forward 1-day excess of constituent returns (equal-weighted)",
    )
    html = ic_table(inputs)
    assert "on the 30 dates every model has" in html
    assert "constituent returns (equal-weighted)" in html
    want = summarize_ic(ic_series(late, grid)["rank_ic"], 1).mean
    assert f"{want:.4f}"[:6] in html  # A's IC is computed on B's 30 dates, not its own 60
    own = summarize_ic(ic_series(full, grid)["rank_ic"], 1).mean
    shared = summarize_ic(ic_series(full.filter(pl.col("date") >= days[30]), grid)["rank_ic"], 1)
    assert f"{shared.mean:.4f}"[:6] in html and shared.mean != own


# ---- rotation-dl compare: the research report ------------------------------------------------


def _compare(out, *extra):
    return subprocess.run(
        [sys.executable, "-m", "rotation_dl.cli", "compare", f"paths.output_dir={out}",
         *DEMO, "compare.bootstrap_reps=200", *extra],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def compared(demo_run):
    out, _ = demo_run
    proc = _compare(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout, json.loads((out / "compare" / "compare.json").read_text())


def test_compare_run_puts_gru_di_and_momentum_side_by_side(compared):
    from rotation_dl.backtest.ic import newey_west_t

    out, stdout, c = compared
    assert set(c["factors"]) == {"gru", "di_lag", "di_ema", "di_above_ma", "di_multi_horizon",
                                 "momentum_20d"}  # fmt: skip
    for f in c["factors"].values():
        assert {"rank_ic", "icir", "t_naive", "t_nw", "t_nonoverlap", "ci95", "by_year",
                "ir_before_costs", "ir_after_costs"} <= set(f)  # fmt: skip
        assert f["ci95"][0] < f["ci95"][1] and len(f["t_nonoverlap_by_offset"]) == 5
        assert f["ir_after_costs"] < f["ir_before_costs"]  # costs are never free
    assert c["spa"]["benchmark"] == "momentum_20d" and 0 <= c["spa"]["pvalue"] <= 1
    assert c["mcs"] and set(c["mcs"]) <= set(c["factors"])
    # every statistic is computed on the same dates, recorded per date beside the summary
    ic = pl.read_parquet(out / "compare" / "compare_ic.parquet")
    assert ic.height == c["dates"] and ic.drop_nulls().height == ic.height
    for name, f in c["factors"].items():
        assert f["rank_ic"] == pytest.approx(ic[name].mean(), rel=1e-12)
        assert f["t_nw"] == pytest.approx(newey_west_t(ic[name].to_numpy(), 4), rel=1e-12)
    assert (
        "SPA (H0: no candidate beats momentum_20d)" in stdout and "model confidence set" in stdout
    )
    assert "gru" in stdout.split("rank IC", 1)[1]


def test_compare_named_panels_and_one_line_errors(compared, tmp_path):
    out, _, _ = compared
    gru = pl.read_parquet(out / "factor_panel.parquet")
    mine = gru.select("date", "industry", (-pl.col("score")).alias("myfactor"))
    mine.write_csv(tmp_path / "mine.csv")
    proc = _compare(
        out,
        f"+compare.factors.gru={out / 'factor_panel.parquet'}",
        f"+compare.factors.mine={tmp_path / 'mine.csv'}",
        "compare.factor_col=myfactor",
    )
    assert proc.returncode != 0  # the GRU panel has no `myfactor` column: said in one line
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "factor panel 'gru' needs date, industry and 'myfactor'" in err[0]
    gru.rename({"score": "myfactor"}).write_parquet(tmp_path / "gru.parquet")
    proc = _compare(
        out,
        f"+compare.factors.gru={tmp_path / 'gru.parquet'}",
        f"+compare.factors.mine={tmp_path / 'mine.csv'}",
        "compare.factor_col=myfactor",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    c = json.loads((out / "compare" / "compare.json").read_text())
    assert set(c["factors"]) == {"gru", "mine", "momentum_20d"}
    assert c["factors"]["mine"]["rank_ic"] == pytest.approx(-c["factors"]["gru"]["rank_ic"])
    bad = _compare(out, "compare.benchmark=nothing")
    assert bad.returncode == 2 and "compare.benchmark='nothing' is not among" in bad.stderr
    missing = _compare(out, f"+compare.factors.x={tmp_path / 'none.parquet'}")
    assert missing.returncode == 2 and "factor panel 'x' not found" in missing.stderr
    (tmp_path / "bad.csv").write_text("date,industry,score\n2024-09-05,A,0.1\nsoon,B,abc\n")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1garbage")
    for bad, says in (("bad.csv", "`date` must be dates and 'score' numbers; e.g. {'date'"),
                      ("bad.parquet", "factor panel 'x' cannot be read")):  # fmt: skip
        run = _compare(out, f"+compare.factors.x={tmp_path / bad}")
        err = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(err) == 1 and says in err[0], run.stderr[-1500:]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (.ci/run installs it)")
def test_research_report_renders_in_headless_chromium(compared, tmp_path):
    out, _, _ = compared
    page = out / "compare" / "compare.html"
    c = json.loads((out / "compare" / "compare.json").read_text())  # the latest compare's
    flags = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=8000", "--enable-logging=stderr", "--v=0"]  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", page.resolve().as_uri()], capture_output=True,
                         text=True, timeout=180)  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    errors = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln and "Error" in ln]
    assert not errors, errors
    for chart in ("cum-ic", "ic-year", "boot", "nav"):
        assert "main-svg" in dom.stdout.split(f'id="{chart}"', 1)[1][:200_000], chart
    assert f"Best: <b>{c['spa']['best']}</b>" in dom.stdout
    assert "Model confidence set at 90%" in dom.stdout


def test_score_never_writes_the_store(demo_run, tmp_path):
    """A missing store, or one that ends before score.asof, is one line naming `ingest`:
    production scoring never ingests (nothing is created)."""
    out, _ = demo_run
    onnx = out.parent / "ck" / "onnx"
    empty = tmp_path / "fresh"
    run = [sys.executable, "-m", "rotation_dl.cli", "score", *DEMO, f"paths.onnx={onnx}"]
    proc = subprocess.run([*run, f"paths.output_dir={empty}"], cwd=REPO, capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 2 and not empty.exists()
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "no store here; `score` reads the store and never writes it" in err[0]
    late = subprocess.run([*run, f"paths.output_dir={out}", "score.asof=2031-01-03"], cwd=REPO,
                          capture_output=True, text=True)  # fmt: skip
    assert late.returncode == 2 and "before score.asof=2031-01-03" in late.stderr
