"""`compare`: several factor panels on their common labelled dates, with what a reviewer needs
to accept a difference: Newey-West and non-overlapping t, stationary-bootstrap CIs, the IC by
year and fold, top-k portfolios before and after costs, Hansen's SPA test of the best against a
named benchmark and the model confidence set (METHODOLOGY section 5)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from rotation_dl.artifacts import write_json, write_table
from rotation_dl.backtest import inference as inf
from rotation_dl.backtest.costs import break_even_bps
from rotation_dl.backtest.engine import run_backtest
from rotation_dl.backtest.ic import rank_ic_wide, summarize_ic
from rotation_dl.config import RunConfig
from rotation_dl.errors import ConfigError, DataError
from rotation_dl.features.labels import forward_excess_from_returns
from rotation_dl.stages.common import layout_of
from rotation_dl.stages.evaluate import baseline
from rotation_dl.stages.inputs import backtest_returns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompareResult:
    summary: dict
    out_dir: Path
    table: str

    def describe(self) -> str:
        s = self.summary
        spa = s["spa"]
        return (
            f"compare: {len(s['factors'])} factor(s) on {s['dates']} common labelled dates "
            f"({s['first_date']}..{s['last_date']}), labels: {s['label']}\n{self.table}\n"
            f"SPA (H0: no candidate beats {spa['benchmark']}): best {spa['best']}, "
            f"p = {spa['pvalue']:.3f}\n"
            f"model confidence set ({1 - s['mcs_size']:.0%}): {', '.join(s['mcs'])}\n"
            + "".join(f"note: {n}\n" for n in s["notes"])
            + f"  outputs: {self.out_dir / 'compare.json'}, {self.out_dir / 'compare.html'}"
        )


def read_panel(path: str | Path, factor_col: str = "score", name: str = "") -> pl.DataFrame:
    """(date, industry, score[, fold]) from a factor panel: a GRU panel (`score`), a DI panel
    (`di`) or a user's file with the named column."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"factor panel {name!r} not found", file=str(p))
    try:
        panel = (
            pl.read_parquet(p) if p.suffix == ".parquet" else pl.read_csv(p, try_parse_dates=True)
        )
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(
            f"factor panel {name!r} cannot be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]})",
            file=str(p),
        ) from exc
    col = factor_col if factor_col in panel.columns else ("di" if "di" in panel.columns else None)
    missing = [c for c in ("date", "industry") if c not in panel.columns]
    if col is None or missing:
        raise DataError(
            f"factor panel {name!r} needs date, industry and {factor_col!r} columns; "
            f"has {panel.columns[:8]}",
            file=str(p),
        )
    keep = [pl.col("date").cast(pl.Date), pl.col("industry").cast(pl.String)]
    keep.append(pl.col(col).cast(pl.Float64).alias("score"))
    if "fold" in panel.columns:
        keep.append(pl.col("fold"))
    try:
        return panel.select(keep).drop_nulls("score")
    except pl.exceptions.PolarsError as exc:  # a date or score that is not one
        as_text = pl.col("date").cast(pl.String)
        bad = panel.filter(
            as_text.str.to_date(strict=False).is_null()
            | pl.col(col).cast(pl.Float64, strict=False).is_null() & pl.col(col).is_not_null()
        )
        raise DataError(
            f"factor panel {name!r}: `date` must be dates and {col!r} numbers",
            file=str(p),
            count=bad.height or None,
            example=bad.row(0, named=True) if bad.height else None,
        ) from exc


def seed_panels(checkpoints: Path, seeds) -> dict[str, pl.DataFrame]:
    """Each seed's out-of-sample scores over every fold (`fold_XX/seed_N/scores.parquet`)."""
    out = {}
    for seed in seeds:
        files = sorted(Path(checkpoints).glob(f"fold_*/seed_{seed}/scores.parquet"))
        if files:
            frame = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
            if "valid" in frame.columns:
                frame = frame.filter(pl.col("valid"))
            out[f"gru_seed{seed}"] = frame.select(
                pl.col("date").cast(pl.Date), "industry", pl.col("score").cast(pl.Float64), "fold"
            ).drop_nulls("score")
    return out


def momentum(returns: pl.DataFrame, days: int) -> pl.DataFrame:
    """n-day momentum from daily returns: the compounded return of the last `days` days."""
    logret = (1 + pl.col("ret")).log()
    return (
        returns.sort("industry", "date")
        .with_columns(
            (logret.rolling_sum(days).over("industry").exp() - 1).alias("score"),
        )
        .select("date", "industry", "score")
        .drop_nulls("score")
        .filter(pl.col("score").is_finite())
    )


def candidates(cfg: RunConfig, returns: pl.DataFrame) -> tuple[dict[str, pl.DataFrame], list]:
    """The panels to compare and notes on what was left out (and why)."""
    from rotation_dl.baselines.diffusion import VARIANTS

    cc, layout = cfg.compare, layout_of(cfg)
    notes: list[str] = []
    panels: dict[str, pl.DataFrame] = {}
    if cc.factors:
        for name, path in cc.factors.items():
            panels[name] = read_panel(path, cc.factor_col, name)
    else:
        if layout.factor_panel.is_file():
            panels["gru"] = read_panel(layout.factor_panel, "score", "gru")
            if len(cfg.seeds) > 1:  # each seed alone beside the ensemble
                panels.update(seed_panels(layout.checkpoints, cfg.seeds))
        else:
            notes.append(f"no GRU factor panel at {layout.factor_panel} (run `train` first)")
        if cc.include_di and not cfg.data.series:
            if not all(layout.di_panel(v).is_file() for v in VARIANTS):
                from dataclasses import replace

                baseline(replace(cfg, baseline=replace(cfg.baseline, all_variants=True)))
            for v in VARIANTS:
                panels[f"di_{v}"] = read_panel(layout.di_panel(v), "di", f"di_{v}")
        elif cc.include_di:
            notes.append("no diffusion index: the data are industry series (no constituents)")
    bench = f"momentum_{cc.momentum_days}d"
    if cc.include_momentum or cc.benchmark == bench:
        panels[bench] = momentum(returns, cc.momentum_days)
    if cc.benchmark not in panels:
        raise ConfigError(
            f"compare.benchmark={cc.benchmark!r} is not among the candidates {sorted(panels)}"
        )
    if len(panels) < 2:
        raise DataError(f"compare needs at least two factor panels; have {sorted(panels)}")
    return panels, notes


def factor_stats(
    ic: np.ndarray, dates: pl.Series, panel: pl.DataFrame, horizon: int, draws: np.ndarray
) -> dict:
    """One factor's IC statistics on the common dates (`draws`: the stationary bootstrap's
    mean ICs, for the CI)."""
    s = summarize_ic(pl.Series(ic), horizon)
    offsets = inf.nonoverlapping_t(ic, horizon)
    finite = [t for t in offsets if np.isfinite(t)]
    lo, hi = inf.percentile_ci(draws)
    years = (
        pl.DataFrame({"date": dates, "ic": ic})
        .group_by(pl.col("date").dt.year().alias("year"))
        .agg(pl.col("ic").mean().alias("rank_ic"), pl.len().alias("dates"))
        .sort("year")
    )
    out = {
        "rank_ic": s.mean,
        "icir": s.icir,
        "t_naive": s.t_stat,
        "t_nw": s.t_newey_west,
        "nw_lag": s.newey_west_lag,
        "t_nonoverlap": float(np.mean(finite)) if finite else float("nan"),
        "t_nonoverlap_by_offset": offsets,
        "t_nonoverlap_range": [min(finite), max(finite)] if finite else None,
        "ci95": [lo, hi],
        "positive_share": s.positive_share,
        "by_year": {str(r["year"]): r["rank_ic"] for r in years.to_dicts()},
        "warning": s.warning,
    }
    if "fold" in panel.columns:
        folds = (
            pl.DataFrame({"date": dates, "ic": ic})
            .join(panel.select("date", "fold").unique("date"), on="date", how="left")
            .group_by("fold")
            .agg(pl.col("ic").mean())
            .sort("fold")
        )
        out["by_fold"] = {str(r["fold"]): r["ic"] for r in folds.to_dicts()}
    return out


def portfolio_stats(
    cfg: RunConfig, panel: pl.DataFrame, returns: pl.DataFrame, first, last, block: int
) -> tuple[dict, pl.DataFrame]:
    """The top-k portfolio of `portfolio` over the common span: IR before and after costs with
    stationary-bootstrap CIs; and its daily (date, gross, net, bench) returns."""
    cc = cfg.compare
    scored = panel.filter(pl.col("date").is_between(first, last))
    res = run_backtest(
        scored,
        returns,
        rule=cfg.portfolio.rule(scored["industry"].n_unique()),
        schedule=cfg.portfolio.schedule,
        every_n=cfg.portfolio.every_n,
        dates=cfg.portfolio.rebalance_dates(),
        cost_rate=cfg.portfolio.cost_rate,
        costs=cfg.market.costs.model(),
    )
    d = res.daily.drop_nulls("port_ret")
    gross = (d["port_ret_gross"] - d["bench_ret"]).to_numpy()
    net = (d["port_ret"] - d["bench_ret"]).to_numpy()

    def ci(x: np.ndarray) -> list[float]:
        return list(inf.bootstrap_ci(x, block, inf.information_ratio, cc.bootstrap_reps, cc.seed))

    stats = {
        "ir_before_costs": inf.information_ratio(gross),
        "ir_after_costs": inf.information_ratio(net),
        "ir_before_costs_ci95": ci(gross),
        "ir_after_costs_ci95": ci(net),
        "annual_excess_before_costs": float(np.mean(gross) * 252),
        "annual_excess_after_costs": float(np.mean(net) * 252),
        "break_even_cost_bps": break_even_bps(gross, d["turnover"].to_numpy()),
        "days": len(d),
    }
    daily = d.select(
        "date",
        pl.col("port_ret_gross").alias("gross"),
        pl.col("port_ret").alias("net"),
        pl.col("bench_ret").alias("bench"),
    )
    return stats, daily


def console_table(factors: dict[str, dict], benchmark: str, mcs: list[str]) -> str:
    head = (
        f"{'factor':<24} {'rank IC':>8} {'95% CI':>17} {'ICIR':>6} {'t':>6} {'t NW':>6} "
        f"{'t n-o':>13} {'IC>0':>5} {'IR gross':>8} {'IR net':>7}  MCS"
    )
    lines = [head, "-" * len(head)]
    for name, f in sorted(factors.items(), key=lambda kv: -np.nan_to_num(kv[1]["rank_ic"])):
        rng = f["t_nonoverlap_range"]
        tno = f"{rng[0]:.2f}..{rng[1]:.2f}" if rng else "n/a"
        mark = ("*" if name in mcs else "") + (" (benchmark)" if name == benchmark else "")
        lines.append(
            f"{name:<24} {f['rank_ic']:>8.4f} [{f['ci95'][0]:+.3f},{f['ci95'][1]:+.3f}] "
            f"{f['icir']:>6.3f} {f['t_naive']:>6.2f} {f['t_nw']:>6.2f} {tno:>13} "
            f"{f['positive_share']:>5.2f} {f['ir_before_costs']:>8.2f} "
            f"{f['ir_after_costs']:>7.2f}  {mark}"
        )
    return "\n".join(lines)


def compare(cfg: RunConfig) -> CompareResult:
    """Compare the candidates of `compare` on their common labelled dates (see module doc)."""
    from rotation_dl.report.research import build_research_report

    cc, h = cfg.compare, cfg.backtest.horizon
    returns = backtest_returns(cfg)
    labels = forward_excess_from_returns(returns, h)
    panels, notes = candidates(cfg, returns)
    wide = rank_ic_wide(panels, labels)
    if wide.height < inf.block_length(h) * 2:
        raise DataError(
            f"only {wide.height} labelled date(s) common to {sorted(panels)}: too few to compare"
        )
    if wide.height < 60:
        notes.append(f"only {wide.height} common dates: every figure below is fragile")
    dates, names = wide["date"], [c for c in wide.columns if c != "date"]
    block = inf.block_length(h)
    first, last = dates.min(), dates.max()
    factors: dict[str, dict] = {}
    daily: dict[str, pl.DataFrame] = {}
    draws: dict[str, list[float]] = {}
    for i, name in enumerate(names):
        ic = wide[name].to_numpy()
        draws[name] = inf.bootstrap_draws(ic, block, reps=cc.bootstrap_reps, seed=cc.seed + i)
        factors[name] = factor_stats(ic, dates, panels[name], h, draws[name])
        port, daily[name] = portfolio_stats(cfg, panels[name], returns, first, last, block)
        factors[name].update(port)
    scores = {n: wide[n].to_numpy() for n in names}
    spa = inf.spa_test(scores, cc.benchmark, block, cc.bootstrap_reps, cc.seed)
    mcs, mcs_p = inf.model_confidence_set(scores, block, cc.mcs_size, cc.bootstrap_reps, cc.seed)
    for n in names:
        factors[n]["mcs_pvalue"] = mcs_p.get(n)
        factors[n]["in_mcs"] = n in mcs
    summary = {
        "dates": wide.height,
        "first_date": str(first),
        "last_date": str(last),
        "horizon": h,
        "label": f"{h}-day forward industry return minus the cross-industry mean",
        "block_length": block,
        "bootstrap_reps": cc.bootstrap_reps,
        "costs": cfg.market.costs.model().describe(),
        "portfolio": f"top-{cfg.portfolio.k} {cfg.portfolio.schedule}",
        "factors": factors,
        "spa": {
            "benchmark": spa.benchmark,
            "best": spa.best,
            "pvalue": spa.pvalue,
            "pvalue_lower": spa.pvalue_lower,
            "pvalue_upper": spa.pvalue_upper,
        },  # fmt: skip
        "mcs": mcs,
        "mcs_size": cc.mcs_size,
        "notes": notes,
    }
    out = layout_of(cfg).compare_dir
    write_table(wide, out / "compare_ic.parquet", csv=True)
    write_json(summary, out / "compare.json")
    build_research_report(summary, wide, daily, draws, out / "compare.html")
    return CompareResult(summary, out, console_table(factors, cc.benchmark, mcs))
