"""`rotation-dl <command> [hydra overrides]`: thin entry points over the library.

Each command composes the Hydra config (conf/), turns it into plain arguments and calls one
library function. User errors (bad data, bad config) print one line and exit with status 2.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rotation_dl.errors import RotationDLError

log = logging.getLogger("rotation_dl")


def conf_dir() -> Path:
    """The config directory: $ROTATION_DL_CONF_DIR, else conf/ at the repository root."""
    env = os.environ.get("ROTATION_DL_CONF_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "conf"


def load_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose conf/config.yaml with command-line style overrides."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _session(cfg: DictConfig):
    from rotation_dl.session import Session

    return Session.from_strings(_plain(cfg.session))


def cmd_sample(cfg: DictConfig) -> dict[str, Path]:
    """Write the synthetic sample market as raw files."""
    from rotation_dl.data.synthetic import SampleConfig, write_sample_market

    if cfg.data.kind != "sample":
        raise RotationDLError("`sample` needs data=sample")
    paths = write_sample_market(
        cfg.data.raw_dir, SampleConfig(**_plain(cfg.data.sample)), _session(cfg)
    )
    log.info("sample market written to %s", cfg.data.raw_dir)
    return paths


def cmd_ingest(cfg: DictConfig):
    """Raw bar files -> validated canonical store."""
    from rotation_dl.data.ingest import ingest_bars
    from rotation_dl.data.readers import ColumnMapping
    from rotation_dl.data.validate import IngestPolicy

    if cfg.data.kind == "sample" and not Path(cfg.data.bars).exists():
        cmd_sample(cfg)
    report = ingest_bars(
        cfg.data.bars,
        cfg.paths.store,
        ColumnMapping(**_plain(cfg.data.mapping)),
        session=_session(cfg),
        partition=cfg.ingest.partition,
        chunk_days=cfg.ingest.chunk_days,
        policy=IngestPolicy(**_plain(cfg.ingest.policy)),
    )
    print(f"ingest: {report.summary()}\n  store: {cfg.paths.store}")
    return report


def _industry_inputs(cfg: DictConfig) -> dict:
    """Data and industry settings every industry-bars build shares."""
    return {
        "classification_columns": _plain(cfg.data.classification_columns),
        "adjustment": cfg.data.adjustment,
        "adjustment_columns": _plain(cfg.data.adjustment_columns),
        "adjusted_daily": cfg.data.adjusted_daily,
        "adjusted_daily_columns": _plain(cfg.data.adjusted_daily_columns),
        "weighting": cfg.industry.weighting,
        "on_unmapped": cfg.industry.on_unmapped,
        "on_missing_industry": cfg.industry.on_missing_industry,
        "session": _session(cfg),
    }


def cmd_industry_bars(cfg: DictConfig):
    """Store + classification -> industry bars parquet."""
    from rotation_dl.pipeline import build_industry_bars

    res = build_industry_bars(
        cfg.paths.store,
        cfg.data.classification,
        cfg.industry.output,
        **_industry_inputs(cfg),
        bar_minutes=cfg.industry.bar_minutes,
        chunk_partitions=cfg.industry.chunk_partitions,
    )
    print(f"industry bars: {res.summary()}\n  written: {res.path}")
    return res


def _ensure_industry_bars(cfg: DictConfig) -> Path:
    path = Path(cfg.industry.output)
    if not path.exists():
        log.info("no industry bars at %s: running ingest and industry-bars first", path)
        cmd_ingest(cfg)
        cmd_industry_bars(cfg)
    return path


def cmd_train(cfg: DictConfig, extra_callbacks=None) -> float:
    """Walk-forward GRU training -> outputs/<run>/factor_panel.parquet (+ checkpoints);
    `-m hparams_search=gru_optuna` runs an Optuna sweep instead."""
    from rotation_dl.models.tracking import finish_wandb
    from rotation_dl.pipeline import train_walk_forward

    ib = _ensure_industry_bars(cfg)
    try:
        outcome = train_walk_forward(
            ib,
            cfg.paths.output_dir,
            cfg.paths.checkpoints,
            cfg.paths.panel_cache,
            features=list(cfg.features.names),
            horizon=cfg.features.horizon,
            volume_window=cfg.features.volume_window,
            min_constituents=cfg.features.min_constituents,
            window=cfg.features.window,
            net=_plain(cfg.model),
            train={**_plain(cfg.trainer), "loss": cfg.loss.name},
            walkforward=_plain(cfg.walkforward),
            seeds=list(cfg.seeds),
            resume=cfg.resume,
            logger=_plain(cfg.logger),
            run=cfg.run,
            session=_session(cfg),
            extra_callbacks=extra_callbacks,
        )
    finally:
        finish_wandb()
    m = outcome.metrics
    if not m:  # a non-zero rank of a distributed run: rank zero reports
        return float("nan")
    r = m["oos_rank_ic"]
    print(
        f"train: {m['folds']} fold(s), {m['test_dates']} out-of-sample dates; OOS rank IC "
        f"mean {r['mean']:.4f} ICIR {r['icir']:.3f} t {r['t_stat']:.2f}; mean val rank IC "
        f"{m['mean_val_rank_ic']:.4f}\n  factor panel: {outcome.factor_panel_path}\n"
        f"  metrics: {outcome.metrics_path}\n  checkpoints: {cfg.paths.checkpoints}"
    )
    return float(m["mean_val_rank_ic"])


def _ensure_store(cfg: DictConfig) -> None:
    from rotation_dl.data.store import read_manifest

    if read_manifest(Path(cfg.paths.store)) is None:
        log.info("no store at %s: running ingest first", cfg.paths.store)
        cmd_ingest(cfg)


def _daily_and_classification(cfg: DictConfig):
    from rotation_dl.data.readers import read_classification
    from rotation_dl.evaluate import daily_bars

    _ensure_store(cfg)
    daily = daily_bars(
        cfg.paths.store,
        adjustment=cfg.data.adjustment,
        adjustment_columns=_plain(cfg.data.adjustment_columns),
        adjusted_daily=cfg.data.adjusted_daily,
        adjusted_daily_columns=_plain(cfg.data.adjusted_daily_columns),
    )
    cls = read_classification(
        cfg.data.classification,
        columns=_plain(cfg.data.classification_columns),
        on_missing_industry=cfg.industry.on_missing_industry,
    )
    return daily, cls


def _rule(p: DictConfig):
    from rotation_dl.backtest.selection import SelectionRule

    return SelectionRule(
        k=p.k, buffer=p.buffer, max_swaps=p.max_swaps, exclude=tuple(p.exclude or ())
    )


def _returns(cfg: DictConfig, daily=None, cls=None):
    from rotation_dl.evaluate import industry_returns

    src = cfg.backtest.returns
    if src == "constituents" and daily is None:
        daily, cls = _daily_and_classification(cfg)
    ib = cfg.industry.output if src == "industry_bars" else None
    if src == "industry_bars":
        _ensure_industry_bars(cfg)
    return industry_returns(
        src,
        daily=daily,
        classification=cls,
        industry_bars_path=ib,
        returns_file=cfg.backtest.returns_file,
        weighting=cfg.backtest.weighting,
    )


def _print_perf(name: str, summary: dict, out: Path) -> None:
    p = summary["performance"]
    ic = summary["ic"]["rank_ic"]
    print(
        f"{name}: {p['start']}..{p['end']}: excess compounded {p['excess_compounded']:+.2%}, "
        f"summed {p['excess_summed']:+.2%}, IR {p['information_ratio']:.2f}, max DD of excess "
        f"{p['max_drawdown_excess']:.2%}, turnover {p['mean_turnover']:.2f}; rank IC "
        f"{ic['mean']:.4f} (t {ic['t_stat']:.2f})\n  outputs: {out}"
    )


def cmd_backtest(cfg: DictConfig) -> dict:
    """Backtest a factor panel (factors=PATH; default: this run's GRU factor panel)."""
    import polars as pl

    from rotation_dl.evaluate import backtest_stage

    path = Path(cfg.factors or Path(cfg.paths.output_dir) / "factor_panel.parquet")
    if not path.exists():
        raise RotationDLError(f"no factor panel at {path}; pass factors=PATH or run `train`")
    factors = pl.read_parquet(path)
    p = cfg.portfolio
    out = Path(cfg.paths.output_dir) / "backtest"
    summary = backtest_stage(
        factors,
        _returns(cfg),
        out,
        rule=_rule(p),
        schedule=p.schedule,
        every_n=p.every_n,
        dates=list(p.dates) if p.dates else None,
        cost_rate=p.cost_rate,
        factor_col=cfg.backtest.factor_col,
        horizon=cfg.backtest.horizon,
        name="backtest",
    )
    _print_perf("backtest", summary, out)
    return summary


def cmd_baseline(cfg: DictConfig) -> dict:
    """Diffusion-index baseline: DI, weekly rankings, monthly top-6 backtest."""
    from rotation_dl.evaluate import diffusion_stage

    daily, cls = _daily_and_classification(cfg)
    b = cfg.baseline
    out = Path(cfg.paths.output_dir) / "baseline"
    summary = diffusion_stage(
        daily,
        cls,
        _returns(cfg, daily, cls),
        out,
        variant=b.variant,
        k=b.k,
        ema_span=b.ema_span,
        rule=_rule(b.portfolio),
        schedule=b.portfolio.schedule,
        horizon=cfg.backtest.horizon,
        all_variants=b.all_variants,
    )
    for v, s in summary["variants"].items():
        _print_perf(f"diffusion[{v}]", s, out)
    return summary


def cmd_timing(cfg: DictConfig) -> dict:
    """Micro-cap diffusion timing: DI, critical-point grid, signal machines, timing backtest."""
    import polars as pl

    from rotation_dl.baselines.timing import SignalConfig, run_timing
    from rotation_dl.evaluate import write_summary, write_table

    daily, _ = _daily_and_classification(cfg)
    t = cfg.timing
    shares = pl.read_parquet(t.shares) if t.shares else None
    members = None
    if t.constituents:
        from rotation_dl.data.readers import normalize_symbols

        members = normalize_symbols(
            pl.read_csv(t.constituents, schema_overrides={"symbol": pl.String})
        )["symbol"].to_list()
    res = run_timing(
        daily,
        n_smallest=t.n_smallest,
        shares=shares,
        constituents=members,
        lag=t.lag,
        cfg=SignalConfig(t.upper, t.lower, t.fast, t.slow),
        execution=t.execution,
    )
    out = Path(cfg.paths.output_dir) / "timing"
    for name in ("series", "grid", "signals", "curves"):
        write_table(res[name], out, f"timing_{name}")
    last = res["series"].tail(1).to_dicts()[0]
    summary = {"universe": res["universe"], "latest": last, "stats": res["stats"]}
    write_summary(summary, out, "timing_summary.json")
    print(
        f"timing ({res['universe']}): DI {last['di']:.3f} on {last['date']}; states "
        + ", ".join(f"{k[6:]}={v}" for k, v in last.items() if k.startswith("state_"))
        + "\n  "
        + "\n  ".join(
            f"{s['machine']}: total {s['total_return']:+.2%} vs buy&hold "
            f"{s['buy_hold_return']:+.2%}, max DD {s['max_drawdown']:.2%}"
            for s in res["stats"]
        )
        + f"\n  outputs: {out}"
    )
    return summary


def cmd_factor_ic(cfg: DictConfig) -> dict:
    """Weekly rank-IC monitor of built-in price/volume factors and user factor columns."""
    import polars as pl

    from rotation_dl.baselines.factor_ic import builtin_factors, top_bottom, weekly_factor_ic
    from rotation_dl.data.readers import normalize_symbols
    from rotation_dl.evaluate import write_summary, write_table

    daily, _ = _daily_and_classification(cfg)
    f = cfg.factor_ic
    shares = pl.read_parquet(f.shares) if f.shares else None
    factors = builtin_factors(daily, shares).collect()
    if f.user_factors:
        user = (
            pl.read_parquet(f.user_factors)
            if str(f.user_factors).endswith(".parquet")
            else pl.read_csv(
                f.user_factors, try_parse_dates=True, schema_overrides={"symbol": pl.String}
            )
        )
        user = normalize_symbols(user.with_columns(pl.col("date").cast(pl.Date)))
        factors = factors.join(user, on=["symbol", "date"], how="left")
    ic, summ = weekly_factor_ic(daily, factors, f.trailing)
    out = Path(cfg.paths.output_dir) / "factor_ic"
    write_table(ic, out, "factor_ic_weekly")
    write_table(summ, out, "factor_ic_summary")
    tb = top_bottom(summ)
    summary = {"week": str(ic["week_end"].max()), "summary": summ.to_dicts(), **tb}
    write_summary(summary, out, "factor_ic_summary.json")
    print(
        f"factor IC, week ending {summary['week']}: top {tb['top']}, bottom {tb['bottom']}"
        f"\n  outputs: {out}"
    )
    return summary


def _latest_checkpoints(ckpt_root: Path) -> list[Path]:
    folds = sorted(p for p in ckpt_root.glob("fold_*") if p.is_dir())
    for fold in reversed(folds):
        found = sorted(fold.glob("seed_*/best.ckpt"))
        if found:
            return found
    raise RotationDLError(f"no checkpoints under {ckpt_root}; run `rotation-dl train` first")


def cmd_export(cfg: DictConfig) -> list[Path]:
    """Checkpoint(s) -> ONNX with self-describing metadata (+ optional fp16/int8 variants)."""

    from rotation_dl.export.onnx_export import export_onnx, make_variant, variant_report

    ckpts = (
        [Path(c) for c in cfg.export.checkpoints]
        if cfg.export.checkpoints
        else _latest_checkpoints(Path(cfg.paths.checkpoints))
    )
    out_dir = Path(cfg.export.out_dir)
    written = []
    for ck in ckpts:
        name = (
            f"{ck.parent.parent.name}_{ck.parent.name}.onnx"
            if ck.parent.name.startswith("seed_")
            else ck.with_suffix(".onnx").name
        )
        path, meta = export_onnx(ck, out_dir / name, opset=cfg.export.opset)
        written.append(path)
        print(
            f"export: {ck} -> {path} ({meta['net']['arch']}, window {meta['window']}, "
            f"{len(meta['feature_spec']['features'])} features, opset {meta['opset']})"
        )
        if cfg.export.variants:
            probe, labels, source = _variant_probe(cfg, meta)
            for kind in cfg.export.variants:
                vp = make_variant(path, kind)
                rep = variant_report(path, vp, probe, labels)
                print(
                    f"  {kind}: {vp}; max |score diff| vs fp32 {rep['max_abs_diff']:.2e}, "
                    f"mean {rep['mean_abs_diff']:.2e}; rank IC {rep['rank_ic_fp32']:+.4f} -> "
                    f"{rep['rank_ic_variant']:+.4f} ({rep['rank_ic_change']:+.4f}) on {source}"
                )
    return written


def _variant_probe(cfg: DictConfig, meta: dict):
    """Normalised windows and labels of the last test dates from this run's industry bars (the
    model's own spec and statistics); random data when the run has none."""
    import numpy as np
    import polars as pl

    from rotation_dl.features.normalize import NormStats, apply_norm
    from rotation_dl.features.panel import FeatureSpec, build_panel

    ib_path = Path(cfg.industry.output)
    spec = FeatureSpec(
        **{**meta["feature_spec"], "features": tuple(meta["feature_spec"]["features"])}
    )
    w = int(meta["window"])
    if ib_path.exists():
        ib = pl.read_parquet(ib_path).filter(pl.col("industry").is_in(meta["industries"]))
        panel = build_panel(ib, spec)
        labelled = [d for d in range(w - 1, len(panel.dates)) if panel.label_mask()[d].any()]
        days = labelled[-64:]
        if days and panel.industries == list(meta["industries"]):
            z = apply_norm(np.asarray(panel.x), NormStats.from_dict(meta["norm"]))
            probe = np.stack([z[d - w + 1 : d + 1].transpose(1, 0, 2, 3) for d in days])
            labels = np.where(panel.label_mask()[days], np.asarray(panel.label)[days], np.nan)
            return probe, labels, f"the last {len(days)} labelled dates of {ib_path.name}"
    rng = np.random.default_rng(0)
    n = len(meta["industries"])
    probe = rng.standard_normal((16, n, w, meta["input"]["bars_per_day"], len(spec.features)))
    return probe, rng.standard_normal((16, n)), "a random probe (no industry bars for this run)"


def cmd_score(cfg: DictConfig) -> dict:
    """Score the latest complete week (or score.asof) with ONNX Runtime: ranks and holdings."""
    from datetime import date as _date

    from rotation_dl.export.scoring import (
        OnnxScorer,
        read_holdings,
        score_from_industry_bars,
        write_score,
    )
    from rotation_dl.pipeline import build_industry_bars

    s = cfg.score
    models = (
        [Path(m) for m in s.models]
        if s.models
        else sorted(p for p in Path(cfg.export.out_dir).glob("*.onnx") if p.stem.count(".") == 0)
    )
    scorer = OnnxScorer(models, prefer=s.providers)
    _ensure_store(cfg)
    asof = _date.fromisoformat(str(s.asof)) if s.asof else None
    start, end = _score_range(cfg.paths.store, asof, s.lookback_days)
    ib = build_industry_bars(
        cfg.paths.store,
        cfg.data.classification,
        None,
        **_industry_inputs(cfg),
        bar_minutes=scorer.spec.bar_minutes or None,
        start=start,
        end=end,
        chunk_partitions=10_000,  # a few weeks of bars: one pass
    )
    holdings = read_holdings(s.holdings) if s.holdings else None
    result = score_from_industry_bars(
        ib.frame,
        scorer,
        asof=asof,
        rule=_rule(cfg.portfolio),
        current_holdings=holdings,
        bar_minutes=ib.bar_minutes,
    )
    payload = write_score(result, s.out_dir, scorer.paths)
    print(
        f"score {result.asof} (vs {result.previous}), {len(models)} model(s) on {result.provider}:"
    )
    print(_table_text(result.table))
    print(f"holdings: {', '.join(result.holdings)}\n  outputs: {s.out_dir}")
    return payload


def _table_text(table) -> str:
    lines = [f"{'rank':>4}  {'industry':<12} {'score':>9} {'chg':>4}  held"]
    for r in table.to_dicts():  # a ~30-row printout
        chg = "" if r["rank_change"] is None else f"{r['rank_change']:+d}"
        score = "   -" if r["score"] is None else f"{r['score']:9.4f}"
        lines.append(
            f"{r['rank']:>4}  {r['industry']:<12} {score:>9} {chg:>4}  "
            f"{'*' if r['held'] else ''} {r['action']}"
        )
    return "\n".join(lines)


def _score_range(store, asof, lookback_days: int):
    """Calendar dates to read for scoring: enough trading days before `asof` (or the store's
    last day) for the window and the feature warm-up."""
    from datetime import date as _date
    from datetime import timedelta

    from rotation_dl.data.store import stored_partitions

    names = stored_partitions(Path(store))
    if not names:
        raise RotationDLError(f"{store}: empty store")
    last = names[-1].split("=", 1)[1]
    end = asof or _date.fromisoformat(last if len(last) == 10 else last + "-28")
    return end - timedelta(days=int(lookback_days * 7 / 5) + 10), asof


def cmd_report(cfg: DictConfig) -> Path:
    """Weekly HTML + Markdown report from this run's train, backtest, baseline, score,
    timing and factor-IC outputs (missing backtests are run first)."""
    import json
    from datetime import date as _date

    import polars as pl

    from rotation_dl.evaluate import forward_returns
    from rotation_dl.export.scoring import latest_complete_week_end
    from rotation_dl.report.weekly import ModelResult, ReportInputs, build_weekly_report

    out = Path(cfg.paths.output_dir)
    need = out / "backtest" / "backtest_daily.parquet"
    if not need.exists():
        cmd_backtest(cfg)
    variant = cfg.baseline.variant
    base = out / "baseline"
    if not (base / f"diffusion_{variant}_daily.parquet").exists():
        cmd_baseline(cfg)
    gru = ModelResult(
        cfg.report.gru_name,
        pl.read_parquet(out / "factor_panel.parquet"),
        pl.read_parquet(need),
        pl.read_parquet(out / "backtest" / "backtest_holdings.parquet"),
    )
    di = ModelResult(
        f"{cfg.report.di_name} ({variant})",
        pl.read_parquet(base / f"di_{variant}.parquet").rename({"di": "score"}),
        pl.read_parquet(base / f"diffusion_{variant}_daily.parquet"),
        pl.read_parquet(base / f"diffusion_{variant}_holdings.parquet"),
    )
    scores = sorted((out / "score").glob("score_*.parquet")) if (out / "score").exists() else []
    score_table = pl.read_parquet(scores[-1]) if scores else None
    if cfg.report.asof:
        asof = _date.fromisoformat(str(cfg.report.asof))
    elif scores:
        asof = _date.fromisoformat(scores[-1].stem.split("_", 1)[1])
    else:
        asof = latest_complete_week_end(gru.daily["date"].to_list())
    timing = None
    tdir = out / "timing"
    if (tdir / "timing_series.parquet").exists():
        timing = {
            "series": pl.read_parquet(tdir / "timing_series.parquet"),
            "grid": pl.read_parquet(tdir / "timing_grid.parquet"),
            "stats": json.loads((tdir / "timing_summary.json").read_text())["stats"],
        }
    fic = out / "factor_ic" / "factor_ic_summary.parquet"
    inputs = ReportInputs(
        asof=asof,
        models=[gru, di],
        forward=forward_returns(_returns(cfg)),
        score_table=score_table,
        di_rankings=pl.read_parquet(base / f"di_{variant}_weekly_rankings.parquet").filter(
            pl.col("date") <= asof
        ),
        timing=timing,
        factor_ic=pl.read_parquet(fic) if fic.exists() else None,
        notes=[
            f"run {cfg.run}; GRU model {gru.factors['model_version'][0]}"
            if "model_version" in gru.factors.columns
            else f"run {cfg.run}"
        ],
    )
    path = build_weekly_report(inputs, cfg.report.out_dir)
    print(f"report: {path.resolve()}\n  summary: {path.with_suffix('.md').resolve()}")
    return path


def run_sweep(cfg: DictConfig, overrides: list[str]) -> dict:
    """Optuna sweep over `hparams_search.params`; see rotation_dl/sweep.py."""
    import subprocess

    from rotation_dl import sweep

    hs = cfg.get("hparams_search")
    if not hs:
        raise RotationDLError("-m needs a search space: add hparams_search=gru_optuna")
    sweep_dir = Path(cfg.paths.sweeps) / hs.study_name
    shared = [  # every trial reuses one store, one industry-bars file per bar size, one cache
        f"paths.store={Path(cfg.paths.store).resolve()}",
        f"industry.output={(sweep_dir / 'data').resolve()}/industry_bars_"
        "${industry.bar_minutes}.parquet",
        f"paths.panel_cache={(sweep_dir / 'panel_cache').resolve()}",
        f"paths.sweeps={Path(cfg.paths.sweeps).resolve()}",
        f"logger.group={hs.study_name}" if cfg.logger.kind == "wandb" else "",
    ]
    base = [o for o in overrides if not o.startswith(("run=", "seeds="))] + [
        o for o in shared if o
    ]
    _ensure_store(cfg)

    def run_trial(trial_overrides, callbacks):
        tcfg = load_config(trial_overrides)
        Path(tcfg.industry.output).parent.mkdir(parents=True, exist_ok=True)
        return cmd_train(tcfg, extra_callbacks=callbacks)

    study = sweep.open_study(
        hs.study_name,
        hs.storage,
        hs.direction,
        hs.seed,
        hs.sampler.n_startup_trials,
        hs.pruner.n_startup_trials,
        hs.pruner.n_warmup_steps,
    )
    if not cfg.get("sweep_worker", False):  # before any worker starts: only dead runs' trials
        sweep.fail_stale_trials(study)
    workers = []
    worker_argv = [
        sys.executable,
        "-m",
        "rotation_dl.cli",
        "train",
        "-m",
        *overrides,
        "+sweep_worker=true",
        "launcher=basic",
    ]
    if cfg.launcher.kind == "submitit_slurm" and not cfg.get("sweep_worker", False):
        return _submit_slurm(cfg, worker_argv)
    if int(hs.workers) > 1 and not cfg.get("sweep_worker", False):
        workers = [subprocess.Popen(worker_argv) for _ in range(int(hs.workers) - 1)]
    try:
        sweep.run_study(
            study, _plain(hs.params), run_trial, int(hs.n_trials), int(hs.seed), base, hs.timeout_s
        )
    finally:
        for w in workers:
            w.wait()
    summary = sweep.write_outputs(study, sweep_dir, Path(hs.best_config_dir))
    print(
        f"sweep {hs.study_name}: {summary['trials']} trial(s) "
        + ", ".join(f"{d['state']}={d['len']}" for d in summary["states"])
        + (
            f"; best mean val rank IC {summary['best_value']:.4f} with "
            f"{summary['best_params']}\n  best config: {summary['best_config']}"
            if "best_value" in summary
            else ""
        )
        + f"\n  trials: {sweep_dir / 'trials.csv'}\n  storage: {hs.storage}"
    )
    return summary


def _submit_slurm(cfg: DictConfig, argv: list[str]) -> dict:
    """Submit `launcher.workers` SLURM jobs running the sweep worker (needs submitit)."""
    try:
        import submitit
    except ImportError as exc:
        raise RotationDLError("launcher=submitit_slurm needs `pip install submitit`") from exc
    import subprocess

    lc = cfg.launcher
    ex = submitit.AutoExecutor(folder=str(Path(cfg.paths.sweeps) / "slurm"))
    ex.update_parameters(
        timeout_min=lc.timeout_min,
        slurm_partition=lc.partition,
        gpus_per_node=lc.gpus_per_node,
        cpus_per_task=lc.cpus_per_task,
        mem_gb=lc.mem_gb,
    )
    jobs = [ex.submit(subprocess.run, argv, check=True) for _ in range(int(lc.workers))]
    ids = [j.job_id for j in jobs]
    print(f"submitted {len(ids)} sweep worker job(s): {', '.join(ids)}")
    return {"jobs": ids}


def cmd_demo(cfg: DictConfig) -> Path:
    """The whole toolkit on the sample market: data, GRU, ONNX, scoring, baselines, report."""
    stages: list[tuple[str, Callable[[DictConfig], Any]]] = [
        ("generate sample market", cmd_sample),
        ("ingest raw bars", cmd_ingest),
        ("build industry bars", cmd_industry_bars),
        ("walk-forward GRU training", cmd_train),
        ("export to ONNX", cmd_export),
        ("score the latest week (onnxruntime)", cmd_score),
        ("backtest the GRU factor", cmd_backtest),
        ("diffusion-index baseline", cmd_baseline),
        ("micro-cap timing", cmd_timing),
        ("factor IC monitor", cmd_factor_ic),
        ("weekly report", cmd_report),
    ]
    if cfg.data.kind != "sample":
        stages = stages[1:]
    t_all = time.perf_counter()
    report = None
    for k, (name, fn) in enumerate(stages, 1):
        t0 = time.perf_counter()
        print(f"[{k}/{len(stages)}] {name} ...", flush=True)
        result = fn(cfg)
        if fn is cmd_report:
            report = result
        print(f"      done in {time.perf_counter() - t0:.1f}s", flush=True)
    out = Path(cfg.paths.output_dir).resolve()
    print(f"demo finished in {time.perf_counter() - t_all:.0f}s; outputs: {out}")
    if report is not None:
        print(f"open the report: {Path(report).resolve()}")
    return out


COMMANDS: dict[str, Callable[[DictConfig], Any]] = {
    "sample": cmd_sample,
    "ingest": cmd_ingest,
    "industry-bars": cmd_industry_bars,
    "train": cmd_train,
    "backtest": cmd_backtest,
    "baseline": cmd_baseline,
    "timing": cmd_timing,
    "factor-ic": cmd_factor_ic,
    "export": cmd_export,
    "score": cmd_score,
    "report": cmd_report,
    "demo": cmd_demo,
}

USAGE = (
    "usage: rotation-dl <command> [key=value ...]\n"
    "commands:\n"
    + "\n".join(f"  {name:<14} {fn.__doc__.splitlines()[0]}" for name, fn in COMMANDS.items())
    + "\nconfig: conf/config.yaml (Hydra); e.g. rotation-dl ingest data=sw_15min"
)


def _quiet_third_party() -> None:
    """Lightning logs through its own handler too; keep one copy and drop known noise."""
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).propagate = False
    for pattern in (
        ".*LeafSpec.*",
        ".*log_every_n_steps.*",
        ".*does not have many workers.*",
        ".*Mean of empty slice.*",
        ".*litlogger.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the process exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    name, overrides = args[0], args[1:]
    multirun = any(o in ("-m", "--multirun") for o in overrides)
    overrides = [o for o in overrides if o not in ("-m", "--multirun")]
    if name not in COMMANDS:
        print(f"rotation-dl: unknown command '{name}'\n{USAGE}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(overrides)
        logging.basicConfig(
            level=getattr(logging, str(cfg.log_level).upper(), logging.INFO),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        _quiet_third_party()
        if multirun and name == "train":
            run_sweep(cfg, overrides)
        elif multirun:
            raise RotationDLError("-m (multirun) is supported for `train` sweeps only")
        else:
            COMMANDS[name](cfg)
    except (RotationDLError, HydraException, OmegaConfBaseException) as exc:
        msg = " ".join(str(exc).split())
        print(f"rotation-dl {name}: error: {type(exc).__name__}: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
