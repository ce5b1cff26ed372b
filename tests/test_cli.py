"""The `rotation-dl` entry point: composes config, runs stages, turns user errors into exit 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import REPO, day_bars, write

from rotation_dl.cli import main
from rotation_dl.config import RunConfig, compose_run
from rotation_dl.errors import ConfigError

SMALL = ["data.sample.n_industries=4", "data.sample.n_stocks=24", "data.sample.n_days=8"]


def _run(args, cwd: Path):
    return subprocess.run(
        [sys.executable, "-m", "rotation_dl.cli", *args], cwd=cwd, capture_output=True, text=True
    )


def test_every_data_option_builds_a_typed_config():
    for name in ("sample", "parquet", "sw_15min", "ashare_daily"):
        cfg = compose_run([f"data={name}", *NEEDS.get(("data", name), [])])
        assert cfg.data.kind in ("sample", "files")
    assert compose_run([]).data.kind == "sample"


def test_data_stages_end_to_end(tmp_path):
    """sample -> ingest -> industry-bars (the full demo is exercised in test_report.py)."""
    out_dir = tmp_path / "out"
    for cmd in ("sample", "ingest", "industry-bars"):
        proc = _run([cmd, f"paths.output_dir={out_dir}", *SMALL], REPO)
        assert proc.returncode == 0, proc.stderr
    ib = pl.read_parquet(out_dir / "industry_bars.parquet")
    assert ib["industry"].n_unique() == 4 and ib["date"].n_unique() == 8
    # idempotent re-ingest
    again = _run(["ingest", f"paths.output_dir={out_dir}", *SMALL], REPO)
    assert again.returncode == 0
    assert "all unchanged since the last ingest: nothing read or added; store version 1" in (
        again.stdout
    )


def test_bad_input_one_line_exit_2_no_output(tmp_path):
    bad = day_bars().with_columns(pl.lit(float("nan")).alias("close"))
    raw = write(bad, tmp_path / "raw" / "bars.parquet")
    cls = write(pl.DataFrame({"symbol": ["600000"], "industry": ["Banks"]}), tmp_path / "c.csv")
    store = tmp_path / "store"
    proc = _run(
        [
            "ingest",
            "data=parquet",
            f"data.bars={raw}",
            f"data.classification={cls}",
            f"paths.store={store}",
        ],
        REPO,
    )
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rotation-dl ingest: error: ValueRangeError")
    assert "close" in err[0] and "16 rows" in err[0] and "Traceback" not in proc.stderr
    assert not store.exists()
    nested = tmp_path / "run" / "nested" / "store"  # a failed first ingest leaves no folders
    proc = _run(
        ["ingest", "data=parquet", f"data.bars={raw}", f"data.classification={cls}",
         f"paths.store={nested}"],
        REPO,
    )  # fmt: skip
    assert proc.returncode == 2 and not (tmp_path / "run").exists()


def test_unknown_override_is_a_user_error(capsys):
    assert main(["ingest", "data=nonexistent"]) == 2
    assert "error" in capsys.readouterr().err


def test_help_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    assert "ingest" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2


def test_unmapped_symbols_policy_via_cli(tmp_path):
    raw = write(day_bars(["600000.SH", "600001.SH"]), tmp_path / "raw" / "bars.parquet")
    cls = write(pl.DataFrame({"symbol": ["600000"], "industry": ["Banks"]}), tmp_path / "c.csv")
    common = [
        "data=parquet",
        f"data.bars={raw}",
        f"data.classification={cls}",
        f"paths.output_dir={tmp_path / 'o'}",
    ]
    assert _run(["ingest", *common], REPO).returncode == 0
    fail = _run(["industry-bars", *common], REPO)
    assert fail.returncode == 2 and "UnmappedSymbolError" in fail.stderr
    assert not (tmp_path / "o" / "industry_bars.parquet").exists()
    ok = _run(["industry-bars", *common, "industry.on_unmapped=drop"], REPO)
    assert ok.returncode == 0, ok.stderr
    assert pl.read_parquet(tmp_path / "o" / "industry_bars.parquet")[
        "industry"
    ].unique().to_list() == ["Banks"]


@pytest.mark.parametrize("bar_minutes", [30, 60])
def test_industry_bars_resampled(tmp_path, bar_minutes):
    out = tmp_path / "o"
    assert _run(["ingest", f"paths.output_dir={out}", *SMALL], REPO).returncode == 0
    proc = _run(
        [
            "industry-bars",
            f"paths.output_dir={out}",
            *SMALL,
            f"industry.bar_minutes={bar_minutes}",
        ],
        REPO,
    )
    assert proc.returncode == 0, proc.stderr
    ib = pl.read_parquet(out / "industry_bars.parquet")
    assert ib.group_by("industry", "date").len()["len"].max() == 240 // bar_minutes


TRAIN_SMALL = [
    *SMALL[:2],
    "data.sample.n_days=90",
    "features.window=3",
    "model.hidden=8",
    "model.layers=1",
    "trainer.max_epochs=1",
    "walkforward.min_train_days=40",
    "walkforward.val_days=10",
    "walkforward.retrain_every=20",
    "trainer.enable_progress_bar=false",
]


def test_train_cli_with_offline_wandb(tmp_path):
    out = tmp_path / "o"
    env_run = subprocess.run(
        [
            sys.executable,
            "-m",
            "rotation_dl.cli",
            "train",
            f"paths.output_dir={out}",
            f"paths.checkpoints={tmp_path / 'ck'}",
            "logger=wandb",
            *TRAIN_SMALL,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "WANDB_API_KEY": "", "WANDB_SILENT": "true"},
    )
    assert env_run.returncode == 0, env_run.stderr[-3000:]
    assert "OOS rank IC" in env_run.stdout
    fp = pl.read_parquet(out / "factor_panel.parquet")
    assert fp.columns == ["date", "industry", "fold", "score", "model_version"]
    assert fp["industry"].n_unique() == 4
    metrics = __import__("json").loads((out / "train_metrics.json").read_text())
    assert metrics["folds"] >= 1 and "oos_rank_ic" in metrics
    r = metrics["oos_rank_ic"]  # honest statistics: HAC t beside the naive one, or a warning
    assert r["newey_west_lag"] == 4 and "t_non_overlapping" in r
    assert ("Newey-West" in env_run.stdout) == (r["warning"] is None)
    assert list((out / "logs" / "wandb").glob("offline-run-*")), "wandb must run offline"
    assert list((tmp_path / "ck").glob("fold_00/seed_0/best.ckpt"))


GROUP_TYPES = {
    "market": "MarketConfig",
    "data": "DataConfig",
    "ingest": "IngestConfig",
    "industry": "IndustryConfig",
    "features": "FeatureConfig",
    "model": "GRUConfig",
    "trainer": "TrainConfig",
    "walkforward": "WalkForwardConfig",
    "logger": "LoggerConfig",
    "portfolio": "PortfolioConfig",
    "baseline": "BaselineConfig",
    "backtest": "BacktestConfig",
    "timing": "TimingConfig",
    "factor_ic": "FactorICConfig",
    "compare": "CompareConfig",
    "export": "ExportConfig",
    "score": "ScoreConfig",
    "report": "ReportConfig",
    "cycle": "CycleConfig",
    "launcher": "LauncherConfig",
    "hparams_search": "SweepConfig",
}
NEEDS = {
    ("data", "parquet"): ["data.bars=x", "data.classification=y"],
    ("data", "industry_series"): ["data.bars=x"],
}


def test_every_option_of_every_group_builds_its_typed_config():
    """Each group maps to exactly one dataclass, and every option file converts to it."""
    conf = REPO / "conf"
    groups = sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name != "experiment")
    assert set(groups) == set(GROUP_TYPES) | {"loss"}, "a group without a typed config"
    for g in groups:
        for opt in sorted((conf / g).glob("*.yaml")):
            cfg = compose_run([f"{g}={opt.stem}", *NEEDS.get((g, opt.stem), [])])
            assert isinstance(cfg, RunConfig)
            if g == "loss":  # the loss group lands inside the trainer's config
                assert type(cfg.trainer.loss).__name__ == "LossConfig"
                assert cfg.trainer.loss.name == opt.stem
            else:
                assert type(getattr(cfg, g)).__name__ == GROUP_TYPES[g], (g, opt.stem)
    for exp in sorted((conf / "experiment").glob("*.yaml")):
        assert compose_run([f"experiment={exp.stem}"]).run == exp.stem


@pytest.mark.parametrize(
    "override, message",
    [
        ("+model.hiden=3", "unknown key model.hiden (not a field of GRUConfig; did you mean"),
        ("+portfolio.top_k=3", "unknown key portfolio.top_k"),
        ("model.hiden=3", "unknown key model.hiden (did you mean model.hidden?)"),
        ("portfolio.top_k=3", "unknown key portfolio.top_k (did you mean portfolio.k?)"),
        (
            "trainer.max_epoch=3",
            "unknown key trainer.max_epoch (did you mean trainer.max_epochs?)",
        ),
        ("model.arch=lstm", "model.arch='lstm' is not one of"),
        ("trainer.loss.name=hinge", "trainer.loss.name='hinge' is not one of"),
        ("loss=hinge", "Could not find 'loss/hinge'"),
        ("trainer.scheduler=step", "trainer.scheduler='step'"),
        ("baseline.variant=rsi", "baseline.variant='rsi' is not one of"),
        ("launcher.kind=ray", "launcher.kind='ray' is not one of"),
        ("features.window=0", "features.window must be at least 1, got 0"),
        ("features.horizon=-2", "features.horizon must be at least 1, got -2"),
        ("features.stock_storage=int8", "use float32, float16 or bfloat16"),
        ("seeds=[]", "seeds is empty"),
        ("score.asof=yesterday", "score.asof='yesterday' is not a date: use YYYY-MM-DD"),
        ("report.asof=2025-13-01", "report.asof='2025-13-01' is not a date"),
        ("portfolio.k=0", "portfolio.k must be at least 1, got 0"),
        ("model.hidden=abc", "model.hidden must be an integer, got 'abc'"),
        ("walkforward.scheme=sliding", "walkforward.scheme='sliding' is not one of"),
        ("features.names=[close_rel,nope]", None),  # checked when the spec is built
    ],
)
def test_config_mistakes_are_one_line_config_errors(override, message, capsys):
    if message is None:
        cfg = compose_run([override])
        with pytest.raises(ConfigError, match="unknown feature"):
            cfg.features.spec(15, cfg.trading_session())
        return
    with pytest.raises(ConfigError) as err:
        compose_run([override])
    assert message in str(err.value)
    assert main(["backtest", override]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rotation-dl backtest: error: ConfigError")


def test_k_larger_than_the_industries_is_clamped_with_a_warning(caplog):
    cfg = compose_run(["portfolio.k=40", "portfolio.buffer=45"])
    with caplog.at_level("WARNING"):
        rule = cfg.portfolio.rule(31)
    assert (rule.k, rule.buffer) == (31, 31)
    assert "portfolio.k=40 is more than the 31 industries" in caplog.text


def test_old_keys_still_work_with_a_deprecation_warning(caplog):
    with caplog.at_level("WARNING"):
        cfg = compose_run(["launcher=joblib", "walkforward=default"])
    assert cfg.launcher.kind == "local" and "launcher=joblib is deprecated" in caplog.text
    with caplog.at_level("WARNING"):
        cfg = compose_run(["+timing.n_smallest=25", "+walkforward.window=rolling"])
    assert cfg.timing.universe_size == 25  # the old key's value, not the new key's default
    assert cfg.walkforward.scheme == "rolling"
    assert "timing.n_smallest is deprecated: use timing.universe_size" in caplog.text


CLI_IMPORT = r"^\s*(from rotation_dl import cli\b|import rotation_dl\.cli|from rotation_dl\.cli )"


def test_arrows_point_one_way():
    """Nothing imports the CLI; only cli.py and config.py import Hydra or OmegaConf."""
    pkg = REPO / "rotation_dl"
    for path in pkg.rglob("*.py"):
        text = path.read_text()
        rel = path.relative_to(pkg).as_posix()
        if rel != "cli.py":
            imports_cli = re.search(CLI_IMPORT, text, re.M)
            assert not imports_cli, rel
        if rel not in ("cli.py", "config.py"):
            assert "import hydra" not in text and "from hydra" not in text, rel
            assert "omegaconf" not in text, rel


def test_stages_run_in_process(tmp_path):
    """The happy path needs no subprocess: stages take the typed config and return results."""
    from rotation_dl.stages.industry import industry_bars
    from rotation_dl.stages.ingest import ingest

    cfg = compose_run([f"paths.output_dir={tmp_path / 'o'}", *SMALL])
    first = ingest(cfg)
    assert first.report.rows_added > 0 and "store:" in first.describe()
    res = industry_bars(cfg)
    assert res.path == tmp_path / "o" / "industry_bars.parquet" and res.path.exists()
    assert res.result.frame["industry"].n_unique() == 4
    assert ingest(cfg).report.rows_added == 0


EVAL_SMALL = ["data.sample.n_industries=6", "data.sample.n_stocks=60", "data.sample.n_days=70"]


def test_evaluation_commands(tmp_path):
    out = tmp_path / "o"
    common = [f"paths.output_dir={out}", *EVAL_SMALL]
    base = _run(["baseline", *common, "baseline.all_variants=true", "baseline.k=10"], REPO)
    assert base.returncode == 0, base.stderr[-2000:]
    for v in ("lag", "multi_horizon", "above_ma", "ema"):
        assert (out / "baseline" / f"diffusion_{v}_daily.parquet").exists()
    summ = __import__("json").loads((out / "baseline" / "diffusion_summary.json").read_text())
    assert len(summ["comparison"]) == 4
    # the DI panel doubles as a factor panel for `backtest`
    di = pl.read_parquet(out / "baseline" / "di_multi_horizon.parquet").rename({"di": "score"})
    di.write_parquet(tmp_path / "f.parquet")
    bt = _run(
        [
            "backtest",
            *common,
            f"factors={tmp_path / 'f.parquet'}",
            "portfolio.k=2",
            "portfolio.buffer=3",
            "portfolio.max_swaps=1",
        ],
        REPO,
    )
    assert bt.returncode == 0, bt.stderr[-2000:]
    assert "geometric" in bt.stdout and "arithmetic" in bt.stdout
    reb = pl.read_parquet(out / "backtest" / "backtest_rebalances.parquet")
    assert reb["n_in"].slice(1).max() <= 1
    tm = _run(["timing", *common, "timing.universe_size=20"], REPO)
    assert tm.returncode == 0, tm.stderr[-2000:]
    assert pl.read_csv(out / "timing" / "timing_grid.csv").height == 11
    log = pl.read_csv(out / "timing" / "signal_log.csv")
    assert log.columns == ["date", "machine", "state", "di"]
    fi = _run(["factor-ic", *common], REPO)
    assert fi.returncode == 0, fi.stderr[-2000:]
    assert "top" in fi.stdout


def test_backtest_without_factors_is_a_user_error(tmp_path):
    proc = _run(
        ["backtest", f"paths.output_dir={tmp_path}", f"factors={tmp_path / 'no.parquet'}"], REPO
    )
    assert proc.returncode == 2 and "no factor panel" in proc.stderr


def test_dict_overrides_work_as_the_readme_writes_them(capsys):
    cfg = compose_run(
        [
            "data=parquet",
            "data.bars=x",
            "data.classification=y",
            "data.mapping.columns={symbol: code, ts: datetime}",
            "data.classification_columns={symbol: stock_code, industry: l1_name}",
        ]
    )
    assert dict(cfg.data.mapping.columns) == {"symbol": "code", "ts": "datetime"}
    assert cfg.data.classification_columns == {"symbol": "stock_code", "industry": "l1_name"}
    added = compose_run(["data=sw_15min", "data.mapping.columns={symbol: code}"])
    assert dict(added.data.mapping.columns) == {"ts": "datetime", "symbol": "code"}
    for broken in (
        ["data.mapping.columns={symbol:", "code}"],
        ["data.mapping.columns=symbol:code"],
    ):
        assert (
            main(["ingest", "data=parquet", "data.bars=x", "data.classification=y", *broken]) == 2
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("rotation-dl ingest: error: ConfigError")
        assert "data.mapping.columns" in err[0] or "quote an override" in err[0]


NOISY = """
import logging, sys
import rotation_dl.stages.ingest as stage
from rotation_dl import cli

class Result:
    def describe(self):
        return "done"

def noisy(cfg):
    for n in (3, 5, 2):
        logging.getLogger("rotation_dl.industry.aggregate").warning(
            "dropped bars of %d unmapped symbols", n)
    logging.getLogger("rotation_dl.data.ingest").warning("another warning")
    return Result()

stage.noisy = noisy
cli.COMMANDS["noisy"] = ("ingest", "noisy", "a test command")
sys.exit(cli.main(["noisy"]))
"""


def test_each_warning_is_printed_once_per_command_with_its_count(tmp_path):
    """A warning logged from every chunk shows once, and one closing line counts the rest."""
    proc = subprocess.run(
        [sys.executable, "-c", NOISY], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert err.count("unmapped symbols") == 2  # the first warning, and the closing count
    assert "dropped bars of 3 unmapped symbols" in err and "another warning" in err
    assert "warning repeated 2 more times in this command: dropped bars of 3" in err
    assert proc.stdout.strip() == "done"


def test_the_demo_command_runs_the_demo_experiment(monkeypatch):
    """`rotation-dl demo` is `make demo` (experiment=demo) unless an experiment is named."""
    import rotation_dl.stages.demo as demo_stage
    from rotation_dl import cli

    seen = []
    monkeypatch.setattr(demo_stage, "demo", lambda cfg, progress: seen.append(cfg.run))
    cli.run_command("demo", [])
    cli.run_command("demo", ["experiment=sample_stock"])
    assert seen == ["demo", "sample_stock"]


def test_ctrl_c_outside_training_is_one_line_exit_130(monkeypatch, capsys):
    import rotation_dl.cli as cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_command", interrupted)
    assert cli.main(["ingest"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rotation-dl ingest: interrupted (Ctrl-C)")
