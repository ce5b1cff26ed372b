"""A new user's first contact with their own files, replayed: each refusal names the setting
that fixes it, the user adds exactly that (their files untouched), and the same commands go
from files to a weekly score and a report that compares the models on their common dates.

Two small generated vendor sets carry the quirks met in the field:
  * minute bars as parquet with the vendor's 13:00 stamp for the morning's last bar, amounts
    of forward-adjusted prices, volume in lots, a classification with Chinese headers, and a
    one-stock industry whose stock stopped trading long before the scored week;
  * unadjusted daily bars with 2:1 splits and no factors or pre_close.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from conftest import SMALL_TRAIN, split_daily_market

from rotation_dl.cli import main
from rotation_dl.synthetic.market import SampleConfig, make_sample_market

TRAIN = [
    *(a for a in SMALL_TRAIN if not a.startswith(("walkforward.retrain_every", "data.sample"))),
    "walkforward.retrain_every=30",
]


def minute_vendor_set(root: Path) -> str:
    """The minute-bar set; returns the symbol of the lone stock that stopped trading."""
    m = make_sample_market(
        SampleConfig(n_industries=3, n_stocks=24, n_days=150, seed=4, calendar="XSHG")
    )
    days = m.bars["ts"].dt.date().unique().sort()
    lone = m.classification["symbol"].sort()[0]
    stopped = days[60]  # long before the scored week's read range
    bars = m.bars.filter(~((pl.col("symbol") == lone) & (pl.col("ts").dt.date() >= stopped)))
    split = days[100]  # forward-adjusted: traded prices were 1 / 0.45 of these before it
    t = pl.col("ts").dt.time()
    bars = bars.select(
        pl.col("symbol").str.slice(0, 6).alias("code"),
        pl.when(t == pl.time(11, 30))  # the vendor's stamp for the morning's last bar
        .then(pl.col("ts").dt.date().cast(pl.Datetime("us")) + pl.duration(hours=13))
        .otherwise(pl.col("ts"))
        .alias("datetime"),
        "open", "high", "low", "close",
        (pl.col("volume") / 100).alias("volume"),  # lots
        pl.when(pl.col("ts").dt.date() < split).then(pl.col("amount") / 0.45)
        .otherwise(pl.col("amount")).alias("amount"),
    )  # fmt: skip
    out = root / "vendor_minutes"
    out.mkdir()
    for (day,), part in bars.group_by(pl.col("datetime").dt.date(), maintain_order=True):
        part.write_parquet(out / f"{day}.parquet")
    cls = m.classification.select(
        pl.col("symbol").str.slice(0, 6).alias("股票代码"),
        pl.when(pl.col("symbol") == lone).then(pl.lit("孤股")).otherwise(pl.col("industry"))
        .alias("申万一级行业"),
    )  # fmt: skip
    cls.write_csv(root / "industries.csv")
    return lone


def daily_split_set(root: Path) -> None:
    daily, cls, _ = split_daily_market(160, 6, (70, 120))
    daily.rename({"date": "ts"}).write_csv(root / "daily.csv")
    cls.write_csv(root / "classification.csv")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


def to_a_weekly_score(capsys, name: str) -> dict:
    """train -> export -> score -> report with the saved experiment; the score payload."""
    for command in ("train", "export"):
        code, _, err = run(capsys, command, f"experiment={name}", *TRAIN)
        assert code == 0, err[-3000:]
    code, out, err = run(capsys, "score", f"experiment={name}", *TRAIN)
    assert code == 0, err[-3000:]
    score_json = sorted(Path("outputs", name, "score").glob("*.json"))[-1]
    code, _, err = run(capsys, "report", f"experiment={name}", *TRAIN)
    assert code == 0, err[-3000:]
    html = next(Path("outputs", name, "report").glob("*.html")).read_text()
    assert "dates every model has" in html  # the GRU and the DI compared on common dates
    return {"out": out, "payload": json.loads(score_json.read_text()), "html": html}


@pytest.mark.slow
def test_minute_vendor_files_from_first_contact_to_a_weekly_score(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROTATION_DL_USER_CONF", raising=False)
    lone = minute_vendor_set(tmp_path)
    base = ["data=parquet", "data.bars=vendor_minutes/", "data.classification=industries.csv",
            "data.mapping.columns={symbol: code, ts: datetime}"]  # fmt: skip
    fixes = []
    for _ in range(4):  # each refusal names the key=value to add: add it, go again
        code, _, err = run(capsys, "industry-bars", *base, *fixes, "run=first")
        if code == 0:
            break
        line = error_line(err)
        if "morning_close_1300" in line:
            fixes.append("data.mapping.morning_close_1300=true")
        elif "volume_multiplier=100" in line:
            fixes.append("data.mapping.volume_multiplier=100")
        elif "data.classification_columns=" in line:
            assert "'股票代码'" in line and "'申万一级行业'" in line
            fixes.append(
                "data.classification_columns={symbol: '股票代码', industry: '申万一级行业'}"
            )
        else:
            pytest.fail(f"a refusal without its fix: {line}")
    assert code == 0 and len(fixes) == 3, fixes
    code, _, err = run(capsys, "init-experiment", "mine", *base, *fixes)
    assert code == 0, err
    got = to_a_weekly_score(capsys, "mine")
    industry = "孤股"
    assert got["payload"]["missing_industries"] == [industry]
    assert f"left unscored and unheld: {industry}" in got["out"]
    row = next(r for r in got["payload"]["table"] if r["industry"] == industry)
    assert row["score"] is None and not row["held"] and industry not in got["payload"]["holdings"]
    assert f"No data this week (unscored, never held): {industry}" in got["html"]
    assert lone[:6]  # the lone stock's files were never edited: its old bars are still there


@pytest.mark.slow
def test_unadjusted_daily_splits_from_first_contact_to_a_weekly_score(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROTATION_DL_USER_CONF", raising=False)
    daily_split_set(tmp_path)
    base = ["data=parquet", "data.bars=daily.csv", "data.classification=classification.csv"]
    code, _, err = run(capsys, "industry-bars", *base, "run=split")
    line = error_line(err)
    assert code == 2 and "AdjustmentError" in line and "data.on_unadjusted=drop" in line
    code, _, err = run(capsys, "init-experiment", "splits", *base, "data.on_unadjusted=drop")
    assert code == 0, err
    got = to_a_weekly_score(capsys, "splits")
    caveat = got["payload"]["data_caveats"][0]
    assert "2 stock-day(s)" in caveat and "data.on_unadjusted=drop" in caveat
    assert "caveat: unadjusted data" in got["out"]
    assert "data.on_unadjusted=drop" in got["html"]
    metrics = json.loads(Path("outputs/splits/train_metrics.json").read_text())
    assert metrics["data_caveats"] == [caveat]
