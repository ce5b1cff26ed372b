"""`backtest`, `baseline`, `timing` and `factor-ic`: factor panels and rule models through the one
backtest engine and metrics, tables written under the run's layout."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from rotation_dl.artifacts import write_json, write_table
from rotation_dl.backtest.costs import CostModel
from rotation_dl.backtest.engine import run_backtest
from rotation_dl.backtest.ic import describe_t
from rotation_dl.backtest.metrics import backtest_summary, calendar_year_table
from rotation_dl.backtest.schedule import rebalance_dates
from rotation_dl.backtest.selection import SelectionRule
from rotation_dl.config import PortfolioConfig, RunConfig
from rotation_dl.errors import DataError
from rotation_dl.layout import TableSet
from rotation_dl.stages.common import layout_of, require_constituents
from rotation_dl.stages.gaps import data_caveats
from rotation_dl.stages.inputs import (
    adjusted_daily_bars,
    backtest_returns,
    daily_and_classification,
    ic_label,
)

log = logging.getLogger(__name__)


def describe_performance(name: str, summary: dict, out: Path) -> str:
    p = summary["performance"]
    g = summary.get("performance_before_costs", p)
    ic = summary["ic"]["rank_ic"]
    against = summary["ic"].get("measured_against")
    be = summary.get("break_even_cost_bps", float("nan"))
    return (
        f"{name}: {p['start']}..{p['end']}: annual excess {g['annual_excess']:+.2%} before "
        f"costs, {p['annual_excess']:+.2%} after (geometric; arithmetic "
        f"{g['annual_excess_arithmetic']:+.2%} / {p['annual_excess_arithmetic']:+.2%}), IR "
        f"{g['information_ratio']:.2f} / {p['information_ratio']:.2f}, break-even cost "
        f"{be:.1f} bps per unit traded; excess total {p['excess_compounded']:+.2%} after costs "
        f"(summed daily {p['excess_summed']:+.2%}), max DD of excess "
        f"{p['max_drawdown_excess']:.2%}, turnover {p['mean_turnover']:.2f}; rank IC "
        f"{ic['mean']:.4f} ({describe_t(ic)})"
        + (f" vs {against}" if against else "")
        + f"\n  costs: {summary.get('costs', 'none')}"
        + "".join(f"\n  caveat: {c}" for c in summary.get("data_caveats", []))
        + f"\n  outputs: {out}"
    )


def run_and_write_backtest(
    factors: pl.DataFrame,
    returns: pl.DataFrame,
    files: TableSet,
    portfolio: PortfolioConfig,
    rule: SelectionRule,
    *,
    factor_col: str = "score",
    horizon: int = 5,
    measured_against: str | None = None,
    caveats: Sequence[str] = (),
    costs: CostModel | None = None,
) -> dict:
    """Run the engine and write daily, holdings, rebalances, years and the summary (whose IC
    says what it is `measured_against`)."""
    res = run_backtest(
        factors,
        returns,
        rule=rule,
        schedule=portfolio.schedule,
        every_n=portfolio.every_n,
        dates=portfolio.rebalance_dates(),
        cost_rate=portfolio.cost_rate,
        factor_col=factor_col,
        costs=costs,
    )
    summary = backtest_summary(res, factors, returns, factor_col, horizon)
    if measured_against:
        summary["ic"]["measured_against"] = measured_against
    if caveats:
        summary["data_caveats"] = list(caveats)
    write_table(res.daily, files.daily)
    write_table(res.holdings, files.holdings)
    write_table(res.rebalances, files.rebalances)
    write_table(calendar_year_table(res.daily), files.table("years"))
    write_json(summary, files.summary)
    return summary


def factor_panel_path(cfg: RunConfig) -> Path:
    """`factors=PATH` when given, else this run's GRU factor panel."""
    return Path(cfg.factors) if cfg.factors else layout_of(cfg).factor_panel


def read_factor_panel(path: Path, factor_col: str) -> pl.DataFrame:
    if not path.is_file():
        raise DataError("no factor panel here; pass factors=PATH or run `train`", file=str(path))
    factors = pl.read_parquet(path)
    missing = [c for c in ("date", "industry", factor_col) if c not in factors.columns]
    if missing:
        raise DataError(
            f"a factor panel needs date, industry and {factor_col!r} columns; missing {missing}",
            file=str(path),
        )
    return factors


@dataclass(frozen=True)
class BacktestStageResult:
    summary: dict
    out_dir: Path

    def describe(self) -> str:
        return describe_performance("backtest", self.summary, self.out_dir)


def backtest(cfg: RunConfig) -> BacktestStageResult:
    """Backtest a factor panel (factors=PATH; default: this run's GRU factor panel)."""
    factors = read_factor_panel(factor_panel_path(cfg), cfg.backtest.factor_col)
    files = layout_of(cfg).backtest
    rule = cfg.portfolio.rule(factors["industry"].n_unique())
    summary = run_and_write_backtest(
        factors,
        backtest_returns(cfg),
        files,
        cfg.portfolio,
        rule,
        factor_col=cfg.backtest.factor_col,
        horizon=cfg.backtest.horizon,
        measured_against=ic_label(cfg),
        caveats=data_caveats(cfg) if not cfg.data.series else (),
        costs=cfg.market.costs.model(),
    )
    return BacktestStageResult(summary, files.dir)


@dataclass(frozen=True)
class BaselineResult:
    summary: dict
    out_dir: Path

    def describe(self) -> str:
        return "\n".join(
            describe_performance(f"diffusion[{v}]", s, self.out_dir)
            for v, s in self.summary["variants"].items()
        )


COMPARED = (
    "excess_compounded",
    "excess_total_arithmetic",
    "excess_summed",
    "annual_excess",
    "annual_excess_arithmetic",
    "information_ratio",
    "max_drawdown_excess",
    "hit_rate",
)


def baseline(cfg: RunConfig) -> BaselineResult:
    """Diffusion-index baseline: DI, weekly rankings and changes, monthly top-k backtest."""
    from rotation_dl.baselines.diffusion import VARIANTS, di_rankings, diffusion_index

    require_constituents(cfg, "the diffusion-index baseline (a share of constituents)")
    b = cfg.baseline
    layout = layout_of(cfg)
    wanted = ["close", "volume", *(["amount"] if cfg.backtest.weighting == "amount" else [])]
    # only the columns it needs: memory on long histories
    daily, cls = daily_and_classification(cfg, wanted, "the diffusion-index baseline")
    returns = backtest_returns(cfg, daily, cls)
    caveats = data_caveats(cfg)
    variants = list(VARIANTS) if b.all_variants else [b.variant]
    results: dict[str, dict] = {}
    for v in variants:
        di = diffusion_index(
            daily,
            cls,
            v,
            b.k,
            b.ema_span,
            multi_horizon=b.multi_horizon,
            above_ma_min_valid=b.above_ma_min_valid,
        )
        rule = b.portfolio.rule(di["industry"].n_unique())
        summary = run_and_write_backtest(
            di.rename({"di": "score"}),
            returns,
            layout.diffusion(v),
            b.portfolio,
            rule,
            horizon=cfg.backtest.horizon,
            measured_against=ic_label(cfg),
            caveats=caveats,
            costs=cfg.market.costs.model(),
        )
        write_table(di, layout.di_panel(v), csv=False)
        rankings = di_rankings(di, rebalance_dates(di["date"].unique(), "weekly"))
        write_table(rankings, layout.di_rankings(v))
        summary["latest_week"] = rankings.filter(
            pl.col("date") == rankings["date"].max()
        ).to_dicts()
        results[v] = summary
    comparison = [
        {
            "variant": v,
            **{k: s["performance"][k] for k in COMPARED},
            "rank_ic_mean": s["ic"]["rank_ic"]["mean"],
            "rank_ic_t": s["ic"]["rank_ic"]["t_stat"],
            "rank_ic_t_newey_west": s["ic"]["rank_ic"]["t_newey_west"],
        }
        for v, s in results.items()
    ]
    summary = {"variant": b.variant, "variants": results, "comparison": comparison}
    write_json(summary, layout.diffusion_summary)
    return BaselineResult(summary, layout.baseline_dir)


@dataclass(frozen=True)
class TimingResult:
    summary: dict
    out_dir: Path

    def describe(self) -> str:
        s = self.summary
        last = s["latest"]
        states = ", ".join(f"{k[6:]}={v}" for k, v in last.items() if k.startswith("state_"))
        machines = "\n  ".join(
            f"{m['machine']}: from {m['signal_start']}: total {m['total_return']:+.2%} vs "
            f"buy&hold {m['buy_hold_return']:+.2%}, max DD {m['max_drawdown']:.2%}, "
            f"{m['exposure']:.0%} of days long, {m['trades']} switches "
            f"({'entered long' if m['initial_entry'] else 'flat'} at the start)"
            for m in s["stats"]
        )
        return (
            f"timing ({s['universe']}): DI {last['di']:.3f} on {last['date']}; states {states}"
            f"\n  {machines}\n  outputs: {self.out_dir}"
        )


def timing(cfg: RunConfig) -> TimingResult:
    """Micro-cap diffusion timing: DI, critical-point grid, signal machines, timing backtest."""
    from rotation_dl.baselines.timing import SignalConfig, run_timing
    from rotation_dl.data.readers import normalize_symbols

    t = cfg.timing
    require_constituents(cfg, "micro-cap timing (the smallest stocks' diffusion index)")
    daily = adjusted_daily_bars(cfg)  # the whole market: no classification needed
    shares = pl.read_parquet(t.shares) if t.shares else None
    members = None
    if t.constituents:
        members = normalize_symbols(
            pl.read_csv(t.constituents, schema_overrides={"symbol": pl.String})
        )["symbol"].to_list()
    res = run_timing(
        daily,
        universe=t.universe,
        universe_size=t.universe_size,
        amount_window=t.amount_window,
        shares=shares,
        constituents=members,
        lag=t.lag,
        cfg=SignalConfig(t.upper, t.lower, t.fast, t.slow),
        execution=t.execution,
    )
    files = layout_of(cfg).timing
    for name in ("series", "grid", "curves"):
        write_table(res[name], files.table(name))
    write_table(res["signals"], layout_of(cfg).timing_signal_log)  # + signal_log.csv
    last = res["series"].tail(1).to_dicts()[0]
    summary = {"universe": res["universe"], "latest": last, "stats": res["stats"]}
    write_json(summary, files.summary)
    return TimingResult(summary, files.dir)


@dataclass(frozen=True)
class FactorICResult:
    summary: dict
    out_dir: Path
    top_bottom: dict = field(default_factory=dict)

    def describe(self) -> str:
        tb = self.top_bottom
        return (
            f"factor IC, week ending {self.summary['week']}: top {tb['top']}, bottom "
            f"{tb['bottom']}\n  outputs: {self.out_dir}"
        )


def read_user_factors(path: str) -> pl.DataFrame:
    from rotation_dl.data.readers import normalize_symbols

    user = (
        pl.read_parquet(path)
        if str(path).endswith(".parquet")
        else pl.read_csv(path, try_parse_dates=True, schema_overrides={"symbol": pl.String})
    )
    return normalize_symbols(user.with_columns(pl.col("date").cast(pl.Date)))


def factor_ic(cfg: RunConfig) -> FactorICResult:
    """Weekly rank-IC monitor of built-in price/volume factors and user factor columns."""
    from rotation_dl.baselines.factor_ic import builtin_factors, top_bottom, weekly_factor_ic

    f = cfg.factor_ic
    require_constituents(cfg, "the factor IC monitor (stock-level factors)")
    daily = adjusted_daily_bars(cfg)
    shares = pl.read_parquet(f.shares) if f.shares else None
    factors = builtin_factors(daily, shares).collect()
    if f.user_factors:
        factors = factors.join(
            read_user_factors(f.user_factors), on=["symbol", "date"], how="left"
        )
    ic, summ = weekly_factor_ic(daily, factors, f.trailing)
    files = layout_of(cfg).factor_ic
    write_table(ic, files.table("weekly"))
    write_table(summ, files.table("summary"))
    tb = top_bottom(summ)
    summary = {"week": str(ic["week_end"].max()), "summary": summ.to_dicts(), **tb}
    write_json(summary, files.summary)
    return FactorICResult(summary, files.dir, tb)
