"""Typed run configuration: one dataclass per Hydra config group, built from a composed config.

`compose_run(overrides)` composes `conf/config.yaml` with Hydra and converts every group into its
dataclass in one place (`to_run_config`). The conversion is strict: a key that a YAML file or an
override sets but the group's dataclass lacks, a value of the wrong type, or a choice outside a
`Literal` is a one-line `ConfigError` naming the key, raised before any stage runs. Stages and
packages only ever see these dataclasses and plain values; only this module and the CLI import
Hydra or OmegaConf.

Groups and their types::

    market      MarketConfig      (time zone, trading session, holiday calendar)
    data        DataConfig        (mapping -> readers.ColumnMapping, sample -> SampleConfig)
    ingest      IngestConfig      (policy -> validate.IngestPolicy)
    industry    IndustryConfig
    features    FeatureConfig     (-> features.spec.FeatureSpec once the bar size is known)
    model       models.config.GRUConfig
    trainer     models.config.TrainConfig (the `loss` group lands in trainer.loss: LossConfig)
    walkforward WalkForwardConfig
    logger      LoggerConfig
    portfolio   PortfolioConfig   (-> backtest.selection.SelectionRule)
    baseline    BaselineConfig
    backtest    BacktestConfig
    timing      TimingConfig
    factor_ic   FactorICConfig
    compare     CompareConfig
    export      ExportConfig
    score       ScoreConfig
    report      ReportConfig
    cycle       CycleConfig       (gate -> GateConfig, monitor -> MonitorConfig)
    launcher    LauncherConfig
    hparams_search  SweepConfig (only with `hparams_search=...`)
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

from rotation_dl.backtest.selection import SelectionRule
from rotation_dl.baselines.diffusion import Eligibility, Variant
from rotation_dl.data.readers import ColumnMapping
from rotation_dl.data.validate import IngestPolicy
from rotation_dl.errors import ConfigError
from rotation_dl.features.spec import STOCK_STORAGE
from rotation_dl.models.config import GRUConfig, TrainConfig
from rotation_dl.session import A_SHARE_HOURS, Session
from rotation_dl.synthetic.market import SampleConfig

log = logging.getLogger(__name__)


def _positive(owner: str, **values: int | float | None) -> None:
    for name, v in values.items():
        if v is not None and v < 1:
            raise ConfigError(f"{owner}.{name} must be at least 1, got {v}")


# ---- data ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig:
    """Where the bars, classification and optional extras come from, and how to read them."""

    kind: Literal["sample", "files"] = "files"
    bars: str | None = None
    classification: str | None = None
    classification_columns: dict[str, str] = field(default_factory=dict)
    adjustment: str | None = None
    adjustment_columns: dict[str, str] = field(default_factory=dict)
    shares: str | None = None
    adjusted_daily: str | None = None
    adjusted_daily_columns: dict[str, str] = field(default_factory=dict)
    mapping: ColumnMapping = field(default_factory=ColumnMapping)
    units_unchecked: tuple[str, ...] = ()  # file globs whose units are taken as they are
    # prices that look unadjusted: refuse (fail), go on as they are (warn), or leave the
    # unexplained moves out of returns as missing overnight moves (drop); warn and drop put a
    # caveat on every output
    on_unadjusted: Literal["fail", "warn", "drop"] = "fail"
    max_limit_breaks_per_10k: float = 1.0  # unexplained limit moves tolerated per 10k stock-days
    sample: SampleConfig | None = None  # kind=sample: the generated market's knobs
    raw_dir: str | None = None  # kind=sample: where the generated raw files go
    level: Literal["stocks", "industries"] = "stocks"  # industries: bars are industry series
    store_version: int | None = None  # read this version of the store (time travel)
    bar_size: int | Literal["daily"] | None = None  # None: detected (one bar a day = daily)

    def __post_init__(self) -> None:
        if self.kind == "sample" and (self.sample is None or self.raw_dir is None):
            raise ConfigError("data.kind=sample needs data.sample and data.raw_dir")
        if isinstance(self.bar_size, int) and self.bar_size < 1:
            raise ConfigError(f"data.bar_size={self.bar_size}: give minutes (>= 1) or 'daily'")

    @property
    def bar_minutes(self) -> int | None:
        """The configured bar size in minutes (0 for daily), None when it is detected."""
        return 0 if self.bar_size == "daily" else self.bar_size

    @property
    def series(self) -> bool:
        """The bars are industry-level series (no constituents, no classification)."""
        return self.level == "industries"


@dataclass(frozen=True)
class IngestConfig:
    partition: Literal["date", "month"] | None = None
    chunk_rows: int = 2_000_000
    chunk_days: int | None = None
    lock_timeout_s: float = 600.0  # wait for another ingest holding the store's writer lock
    policy: IngestPolicy = field(default_factory=IngestPolicy)

    def __post_init__(self) -> None:
        _positive("ingest", chunk_rows=self.chunk_rows, chunk_days=self.chunk_days)


@dataclass(frozen=True)
class IndustryConfig:
    weighting: Literal["equal", "amount"] = "equal"
    bar_minutes: int | None = None
    on_unmapped: Literal["fail", "drop"] = "fail"
    on_missing_industry: Literal["fail", "drop"] = "fail"
    chunk_partitions: int = 5
    factor_tolerance: float = 0.005  # adjusted-daily factors change only on moves above this

    def __post_init__(self) -> None:
        _positive("industry", bar_minutes=self.bar_minutes, chunk_partitions=self.chunk_partitions)
        if not 0 <= self.factor_tolerance < 0.5:
            raise ConfigError(
                f"industry.factor_tolerance must be in [0, 0.5), got {self.factor_tolerance}"
            )


# ---- features and training -------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureConfig:
    """The `features` group: which features, the label horizon and the model's input window.

    `names: null` means every built-in feature (`features.bars.FEATURES`, the one list).
    """

    names: tuple[str, ...] | None = None
    horizon: int = 5
    volume_window: int = 20
    min_constituents: int = 1
    window: int = 20  # W: trading days of bars in one sample
    # stock panel (model.level=stock|pooled): feature storage, days per build block, and the
    # days since a stock's first bar before it counts as active (null: volume_window)
    stock_storage: str = "float32"
    stock_block_days: int = 20
    min_listed_days: int | None = None

    def __post_init__(self) -> None:
        _positive(
            "features",
            horizon=self.horizon,
            volume_window=self.volume_window,
            min_constituents=self.min_constituents,
            window=self.window,
            stock_block_days=self.stock_block_days,
        )
        if self.stock_storage not in STOCK_STORAGE:
            raise ConfigError(
                f"features.stock_storage={self.stock_storage!r}: use "
                f"{', '.join(STOCK_STORAGE[:-1])} or {STOCK_STORAGE[-1]}"
            )
        if self.min_listed_days is not None and self.min_listed_days < 0:
            raise ConfigError(
                f"features.min_listed_days must be >= 0 (or null), got {self.min_listed_days}"
            )
        if self.names is not None and not self.names:
            raise ConfigError("features.names is empty; leave it null for every feature")

    def spec(self, bar_minutes: int, session: Session, series: bool = False):  # -> FeatureSpec
        """The full feature spec once the data's bar size is known; `series` (industry series,
        no constituents) defaults to the features a single series defines."""
        from rotation_dl.features.spec import FeatureSpec

        return FeatureSpec.build(
            self.names,
            bar_minutes,
            self.horizon,
            self.volume_window,
            self.min_constituents,
            session,
            series=series,
        )


@dataclass(frozen=True)
class WalkForwardConfig:
    scheme: Literal["expanding", "rolling"] = "expanding"
    min_train_days: int = 120
    train_days: int | None = None
    val_days: int = 20
    retrain_every: int = 20
    gap: int = 5
    max_folds: int | None = None
    # at most this many folds over the whole out-of-sample span: a longer history raises
    # retrain_every instead of planning hundreds of folds (None: no cap)
    fold_cap: int | None = 24

    def __post_init__(self) -> None:
        _positive(
            "walkforward",
            fold_cap=self.fold_cap,
            min_train_days=self.min_train_days,
            train_days=self.train_days,
            val_days=self.val_days,
            retrain_every=self.retrain_every,
            max_folds=self.max_folds,
        )
        if self.gap < 0:
            raise ConfigError(f"walkforward.gap must be >= 0, got {self.gap}")


@dataclass(frozen=True)
class LoggerConfig:
    kind: Literal["csv", "wandb", "none"] = "csv"
    project: str = "rotation_dl"
    entity: str | None = None
    group: str | None = None


# ---- evaluation ------------------------------------------------------------------------------
Schedule = Literal["weekly", "monthly", "daily", "every_n", "dates"]


@dataclass(frozen=True)
class PortfolioConfig:
    k: int = 6
    buffer: int | None = None
    max_swaps: int | None = None
    exclude: tuple[str, ...] = ()
    schedule: Schedule = "weekly"
    every_n: int = 5
    dates: tuple[str, ...] | None = None
    cost_rate: float = 0.0

    def __post_init__(self) -> None:
        _positive("portfolio", k=self.k, every_n=self.every_n, max_swaps=self.max_swaps)
        if self.buffer is not None and self.buffer < self.k:
            raise ConfigError(
                f"portfolio.buffer ({self.buffer}) must be >= portfolio.k ({self.k})"
            )
        if not 0 <= self.cost_rate < 1:
            raise ConfigError(f"portfolio.cost_rate must be in [0, 1), got {self.cost_rate}")
        if self.schedule == "dates" and not self.dates:
            raise ConfigError("portfolio.schedule=dates needs portfolio.dates")

    def rule(self, n_industries: int | None = None) -> SelectionRule:
        """The selection rule; `k` (and the buffer) clamped, with a warning, to the number of
        industries when more are asked for than exist, and a buffer that covers every industry
        (holdings would never leave) cut to halfway between k and their number."""
        k, buffer = self.k, self.buffer
        if n_industries is not None and k > n_industries:
            log.warning(
                "portfolio.k=%d is more than the %d industries: holding all %d",
                k,
                n_industries,
                n_industries,
            )
            k = n_industries
            buffer = None if buffer is None else max(k, min(buffer, n_industries))
        elif n_industries is not None and buffer is not None and buffer >= n_industries > k:
            clamped = k + (n_industries - k) // 2
            log.warning(
                "portfolio.buffer=%d covers all %d industries, so holdings would never leave: "
                "using buffer=%d (set portfolio.buffer below %d)",
                buffer,
                n_industries,
                clamped,
                n_industries,
            )
            buffer = clamped
        return SelectionRule(k=k, buffer=buffer, max_swaps=self.max_swaps, exclude=self.exclude)

    def rebalance_dates(self) -> list[date] | None:
        return [date.fromisoformat(str(d)) for d in self.dates] if self.dates else None


@dataclass(frozen=True)
class BaselineConfig:
    variant: Variant = "multi_horizon"
    k: int = 20
    ema_span: float = 10.0
    multi_horizon: Eligibility = "per_lag"
    above_ma_min_valid: int | None = None  # valid closes an above_ma window needs (None: k)
    all_variants: bool = False
    portfolio: PortfolioConfig = field(
        default_factory=lambda: PortfolioConfig(k=6, schedule="monthly")
    )

    def __post_init__(self) -> None:
        _positive("baseline", k=self.k)
        if self.ema_span <= 0:
            raise ConfigError(f"baseline.ema_span must be positive, got {self.ema_span}")
        if self.above_ma_min_valid is not None and not 1 <= self.above_ma_min_valid <= self.k:
            raise ConfigError(
                f"baseline.above_ma_min_valid must be in 1..baseline.k={self.k}, got "
                f"{self.above_ma_min_valid}"
            )


@dataclass(frozen=True)
class BacktestConfig:
    returns: Literal["auto", "constituents", "industry_bars", "file"] = "auto"
    returns_file: str | None = None
    weighting: Literal["equal", "amount"] = "equal"
    horizon: int = 5
    factor_col: str = "score"

    def __post_init__(self) -> None:
        _positive("backtest", horizon=self.horizon)
        if self.returns == "file" and not self.returns_file:
            raise ConfigError("backtest.returns=file needs backtest.returns_file")


@dataclass(frozen=True)
class TimingConfig:
    universe: Literal["auto", "smallest_cap", "smallest_amount", "all", "list"] = "auto"
    universe_size: int = 400
    amount_window: int = 20
    shares: str | None = None
    constituents: str | None = None
    lag: int = 20
    upper: float = 0.9
    lower: float = 0.1
    fast: int = 10
    slow: int = 20
    execution: Literal["close", "next_open"] = "close"

    def __post_init__(self) -> None:
        _positive(
            "timing",
            universe_size=self.universe_size,
            amount_window=self.amount_window,
            lag=self.lag,
            fast=self.fast,
        )
        if not 0 <= self.lower < self.upper <= 1:
            raise ConfigError(
                f"timing thresholds need 0 <= lower < upper <= 1, got {self.lower}, {self.upper}"
            )
        if self.slow <= self.fast:
            raise ConfigError(f"timing.slow ({self.slow}) must exceed timing.fast ({self.fast})")


@dataclass(frozen=True)
class FactorICConfig:
    shares: str | None = None
    user_factors: str | None = None
    trailing: int = 12

    def __post_init__(self) -> None:
        _positive("factor_ic", trailing=self.trailing)


@dataclass(frozen=True)
class CompareConfig:
    """`rotation-dl compare`: which factor panels, against which benchmark, how many draws."""

    factors: dict[str, str] = field(default_factory=dict)  # name -> panel (empty: the run's)
    factor_col: str = "score"  # the score column of the given panels (a DI panel's `di` works)
    include_di: bool = True  # with no factors named: every DI variant
    include_momentum: bool = True  # and n-day momentum (always available as a benchmark)
    momentum_days: int = 20
    benchmark: str = "momentum_20d"
    bootstrap_reps: int = 1000
    mcs_size: float = 0.10  # the model confidence set at 1 - mcs_size
    seed: int = 0

    def __post_init__(self) -> None:
        _positive("compare", momentum_days=self.momentum_days, bootstrap_reps=self.bootstrap_reps)
        if not 0 < self.mcs_size < 1:
            raise ConfigError(f"compare.mcs_size must be in (0, 1), got {self.mcs_size}")


# ---- production ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportConfig:
    checkpoints: tuple[str, ...] | None = None
    opset: int = 17
    variants: tuple[Literal["fp16", "int8"], ...] = ()

    def __post_init__(self) -> None:
        if self.opset < 17:
            raise ConfigError(f"export.opset must be >= 17, got {self.opset}")


@dataclass(frozen=True)
class ScoreConfig:
    models: tuple[str, ...] | None = None
    asof: str | None = None
    holdings: str | None = None
    providers: Literal["auto", "cuda", "cpu"] = "auto"
    lookback_days: int = 60
    # an industry of the model without a trading constituent in the data: scored as absent
    # (named in a warning, the score file and the report; never held), or the week refused
    on_missing_industry: Literal["warn", "fail"] = "warn"

    def __post_init__(self) -> None:
        _positive("score", lookback_days=self.lookback_days)
        _iso_date("score.asof", self.asof)


@dataclass(frozen=True)
class ReportConfig:
    asof: str | None = None
    gru_name: str = "GRU"
    di_name: str = "Diffusion index"

    def __post_init__(self) -> None:
        _iso_date("report.asof", self.asof)


@dataclass(frozen=True)
class GateConfig:
    """What a new model must show before it is promoted (`rotation-dl cycle`)."""

    max_parity: float = 1.0e-5  # max |ONNX - torch| score on the shadow weeks' inputs
    min_val_ic: float = 0.0  # mean validation rank IC over the seeds
    shadow_weeks: int = 4  # labelled weeks of the candidate's validation block, scored by both
    shadow_margin: float = 0.05  # refused when its shadow IC is below live's by more than this

    def __post_init__(self) -> None:
        _positive("cycle.gate", shadow_weeks=self.shadow_weeks)
        if not self.max_parity > 0 or self.shadow_margin < 0:
            raise ConfigError("cycle.gate.max_parity must be > 0 and shadow_margin >= 0")


@dataclass(frozen=True)
class MonitorConfig:
    """Alert levels of the live monitor."""

    weeks: int = 12  # the live window set against the walk-forward OOS band
    min_windows: int = 10  # a band of fewer W-week windows never alerts (its p5 ~ its minimum)
    psi_alert: float = 0.25  # input drift: a feature's PSI at or above this
    min_active_share: float = 0.8  # constituents trading vs the 20 days before
    max_store_lag_days: int = 1  # trading days the store may lag the calendar

    def __post_init__(self) -> None:
        _positive("cycle.monitor", weeks=self.weeks, min_windows=self.min_windows)


@dataclass(frozen=True)
class CycleConfig:
    """`rotation-dl cycle`: the weekly production cycle (and its replay over past weeks)."""

    asof: str | None = None  # the week to publish (default: the latest complete week)
    replay: str | None = None  # START..END: run the cycle week by week over past data
    republish: bool = False  # a published week with a different result: add a revision
    ingest: bool = True  # read new raw files first (off: the store as it is)
    retrain: bool = True  # train a new fold when the walk-forward schedule says it is due
    gate: GateConfig = field(default_factory=GateConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    def __post_init__(self) -> None:
        _iso_date("cycle.asof", self.asof)
        if self.replay is not None:
            self.replay_span()

    def replay_span(self) -> tuple[Any, Any]:
        from datetime import date

        parts = str(self.replay).split("..")
        try:
            start, end = (date.fromisoformat(p.strip()) for p in parts)
        except ValueError:
            raise ConfigError(
                f"cycle.replay={self.replay!r}: expected START..END, e.g. 2025-01-01..2025-03-31"
            ) from None
        if end < start:
            raise ConfigError(f"cycle.replay={self.replay}: END is before START")
        return start, end


# ---- sweeps ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LauncherConfig:
    """How sweep trials fan out: `basic` (this process), `local` (worker processes on this
    machine sharing the study storage) or `submitit_slurm` (SLURM jobs)."""

    kind: Literal["basic", "local", "submitit_slurm"] = "basic"
    workers: int = 1
    partition: str | None = None
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 64
    timeout_min: int = 720

    def __post_init__(self) -> None:
        _positive("launcher", workers=self.workers)


@dataclass(frozen=True)
class SweepConfig:
    study_name: str
    storage: str
    params: dict[str, Any]
    direction: Literal["maximize", "minimize"] = "maximize"
    n_trials: int = 20
    workers: int = 1
    seed: int = 0
    timeout_s: float | None = None
    sampler_startup_trials: int = 5
    pruner_startup_trials: int = 3
    pruner_warmup_steps: int = 2
    best_config_dir: str = "conf/experiment"
    heartbeat_s: int = 10
    grace_s: int = 60
    retries: int = 1

    def __post_init__(self) -> None:
        _positive("hparams_search", n_trials=self.n_trials, workers=self.workers)
        _positive("hparams_search", heartbeat_s=self.heartbeat_s)
        if self.grace_s <= self.heartbeat_s:
            raise ConfigError(
                f"hparams_search.grace_s ({self.grace_s}) must exceed heartbeat_s "
                f"({self.heartbeat_s}): a live trial would be taken for a dead one"
            )
        if self.retries < 0:
            raise ConfigError(f"hparams_search.retries must be >= 0, got {self.retries}")
        if not self.params:
            raise ConfigError("hparams_search.params is empty: nothing to search")


# ---- the run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PathsConfig:
    """Every configurable location; `layout.RunLayout` derives each artifact's path from it."""

    output_dir: str = "outputs/run"
    store: str = "outputs/run/store"
    data_root: str = "../shared/data"
    checkpoints: str = "checkpoints/run"
    panel_cache: str = "outputs/run/panel_cache"
    industry_bars: str = "outputs/run/industry_bars.parquet"
    onnx: str = "checkpoints/run/onnx"
    score: str = "outputs/run/score"
    report: str = "outputs/run/report"
    sweeps: str = "outputs/sweeps"


@dataclass(frozen=True)
class CostConfig:
    """`market.costs`: what a trade costs, in basis points of the traded value."""

    commission_bps: float = 0.0  # each side
    transfer_bps: float = 0.0  # each side
    slippage_bps: float = 0.0  # each side, per unit of turnover
    stamp_duty: tuple[tuple[str, float], ...] = ()  # [effective from (ISO date), bps on sells]

    def __post_init__(self) -> None:
        self.model()  # validates

    def model(self):
        from datetime import date

        from rotation_dl.backtest.costs import CostModel

        try:
            steps = tuple((date.fromisoformat(str(d)), float(r)) for d, r in self.stamp_duty)
            return CostModel(self.commission_bps, self.transfer_bps, self.slippage_bps, steps)
        except ValueError as exc:
            raise ConfigError(f"market.costs: {exc}") from exc


@dataclass(frozen=True)
class MarketConfig:
    """The `market` group: local time zone, trading session and holiday calendar."""

    name: str = "ashare"
    timezone: str = "Asia/Shanghai"
    session: tuple[tuple[str, str], ...] = A_SHARE_HOURS
    calendar: str | None = "XSHG"
    symbol_format: Literal["ashare", "keep"] = "ashare"  # the default of data.mapping
    price_limits: Literal["ashare", "none"] = "ashare"  # the unadjusted-price check's limits
    costs: CostConfig = field(default_factory=lambda: CostConfig())

    def __post_init__(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"market.timezone={self.timezone!r} is not a time zone") from exc
        self.trading_session()  # validates the intervals

    def trading_session(self) -> Session:
        return Session.from_strings(self.session)


@dataclass(frozen=True)
class RunConfig:
    """A whole composed run: the top-level keys and one typed config per group."""

    run: str
    paths: PathsConfig
    market: MarketConfig
    data: DataConfig
    ingest: IngestConfig
    industry: IndustryConfig
    features: FeatureConfig
    model: GRUConfig
    trainer: TrainConfig
    walkforward: WalkForwardConfig
    logger: LoggerConfig
    portfolio: PortfolioConfig
    baseline: BaselineConfig
    backtest: BacktestConfig
    timing: TimingConfig
    factor_ic: FactorICConfig
    compare: CompareConfig
    export: ExportConfig
    score: ScoreConfig
    report: ReportConfig
    cycle: CycleConfig
    launcher: LauncherConfig
    factors: str | None = None
    seeds: tuple[int, ...] = (0,)
    resume: bool = False
    log_level: str = "INFO"
    hparams_search: SweepConfig | None = None
    sweep_worker: bool = False

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ConfigError("seeds is empty: give at least one seed, e.g. seeds=[0]")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds has repeats: {list(self.seeds)}")

    def trading_session(self) -> Session:
        return self.market.trading_session()


# ---- strict conversion -----------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """`value` checked against and coerced to the annotation `tp` (a small, strict subset:
    primitives, Optional/unions, Literal, tuple[...], dict[str, X], nested dataclasses)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where} must not be null")
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arm, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits no type")
    if value is None:
        raise ConfigError(f"{where} must not be null (expected {_type_name(tp)})")
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{where}={value!r} is not one of {', '.join(repr(a) for a in args)}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping of {tp.__name__} fields, got {value!r}")
        return build(tp, value, where)
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp in (dict,):
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{where} must be a mapping such as {{symbol: code}}, got {value!r} (quote "
                f"the whole override: '{where.split(':')[0]}={{a: b}}')"
            )
        item = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, item, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _iso_date(key: str, value: object) -> None:
    """A date key must be YYYY-MM-DD (or unset): a one-line ConfigError otherwise."""
    if value is None:
        return
    try:
        date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(
            f"{key}={value!r} is not a date: use YYYY-MM-DD, e.g. 2025-01-10"
        ) from None


def closest(key: str, known: Iterable[str]) -> str | None:
    """The known name nearest to a mistyped `key` (None when nothing is near)."""
    found = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return found[0] if found else None


def _flat_keys(tree: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a nested mapping."""
    if not isinstance(tree, Mapping):
        return []
    out = []
    for k, v in tree.items():
        out.append(f"{prefix}{k}")
        out += _flat_keys(v, f"{prefix}{k}.")
    return out


def build(cls: type, values: Mapping[str, Any], where: str = ""):
    """Dataclass `cls` from a mapping; unknown keys and ill-typed values are `ConfigError`s."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    prefix = f"{where}." if where else ""
    if unknown:
        guess = closest(unknown[0], names)
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(prefix + k for k in unknown)} (not a field of {cls.__name__}"
            + (f"; did you mean {prefix}{guess}?" if guess else "")
            + f"; known: {', '.join(sorted(names))})"
        )
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


_DEPRECATED_KEYS = {  # old key -> new key (one release of grace)
    ("walkforward", "window"): ("walkforward", "scheme"),
    ("timing", "n_smallest"): ("timing", "universe_size"),
}


def _upgrade(groups: dict[str, Any]) -> dict[str, Any]:
    """Old spellings still accepted, with a warning: walkforward.window, timing.n_smallest
    (given with `+`, as keys the configs no longer have), launcher=joblib. The old key's value
    wins over the new key's default."""
    for (group, old), (_, new) in _DEPRECATED_KEYS.items():
        node = groups.get(group)
        if isinstance(node, dict) and old in node:
            log.warning("%s.%s is deprecated: use %s.%s", group, old, group, new)
            node[new] = node.pop(old)
    launcher = groups.get("launcher")
    if isinstance(launcher, dict) and launcher.get("kind") == "joblib":
        log.warning("launcher=joblib is deprecated (it never used joblib): use launcher=local")
        launcher["kind"] = "local"
    return groups


def _sweep_values(node: Mapping[str, Any]) -> dict[str, Any]:
    flat = dict(node)
    for outer, inner in (("sampler", "sampler_"), ("pruner", "pruner_")):
        for k, v in dict(flat.pop(outer, None) or {}).items():
            flat[f"{inner}{k}"] = v
    return flat


def to_run_config(tree: Mapping[str, Any]) -> RunConfig:
    """A composed, resolved config tree (plain dicts) -> RunConfig (strict)."""
    values = _upgrade({k: (dict(v) if isinstance(v, Mapping) else v) for k, v in tree.items()})
    if values.get("hparams_search"):
        values["hparams_search"] = _sweep_values(values["hparams_search"])
    if isinstance(values.get("model"), Mapping) and "n_features" in values["model"]:
        raise ConfigError("model.n_features is set from features.names; remove it")
    return build(RunConfig, values)


# ---- composing with Hydra --------------------------------------------------------------------
def conf_dir() -> Path:
    """The config directory: $ROTATION_DL_CONF_DIR, else conf/ of a source checkout, else the
    copy shipped inside the installed package (rotation_dl/conf)."""
    env = os.environ.get("ROTATION_DL_CONF_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    checkout = here.parent / "conf"
    if (checkout / "config.yaml").exists():
        return checkout
    return here / "conf"


def dict_overrides_merge(overrides: Sequence[str]) -> list[str]:
    """`key={a: b}` -> `++key={a: b}`: a dict-valued override adds to (or overrides entries
    of) the mapping the config already has, even an empty `{}` (which Hydra's struct mode
    would refuse to extend). Prefixed overrides (+, ++, ~) are left as written."""
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        is_plain = sep and not key.startswith(("+", "~")) and "/" not in key
        out.append(f"++{o}" if is_plain and value.lstrip().startswith("{") else o)
    return out


USER_CONF = "rotation_dl_conf"  # a user's own config folder, in the working directory


def user_conf_dir() -> Path:
    """Where a user's own configs live (`init-experiment` writes `experiment/NAME.yaml` there):
    $ROTATION_DL_USER_CONF, else ./rotation_dl_conf. Composition searches it after conf/."""
    return Path(os.environ.get("ROTATION_DL_USER_CONF") or Path.cwd() / USER_CONF).resolve()


def compose(overrides: Sequence[str] = ()):
    """Hydra-compose conf/config.yaml with command-line style overrides (a DictConfig); the
    user's config folder (`user_conf_dir`), when it exists, is on the search path, so
    `experiment=NAME` finds an experiment saved there."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    root = conf_dir()
    if not (root / "config.yaml").exists():
        raise ConfigError(f"no config.yaml under {root} (set ROTATION_DL_CONF_DIR)")
    overrides = dict_overrides_merge(overrides)
    user = user_conf_dir()
    if user.is_dir() and not any(o.startswith("hydra.searchpath") for o in overrides):
        overrides.append(f"hydra.searchpath=[file://{user}]")
    with initialize_config_dir(config_dir=str(root), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def unknown_override(key: str, overrides: Sequence[str]) -> str | None:
    """Hydra's "Could not override 'k'" said our way: the unknown key and the nearest known
    one (from the config composed without that override), instead of advice to add `+k`."""
    from omegaconf import OmegaConf

    parent = key.rsplit(".", 1)[0] + "."  # its siblings are likely unknown there too
    rest = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith(parent)]
    try:
        known = _flat_keys(OmegaConf.to_container(compose(rest), resolve=False))
    except Exception:  # the other overrides fail too: Hydra's own message then
        return None
    head = key.rpartition(".")[0]
    if head and head not in known:
        return f"unknown key {key} ({head} does not exist in this config)"
    siblings = [k for k in known if k.rpartition(".")[0] == head]
    guess = closest(key, siblings)
    return f"unknown key {key}" + (f" (did you mean {guess}?)" if guess else "")


def compose_run(overrides: Sequence[str] = ()) -> RunConfig:
    """Compose and convert: the one way a run's configuration is made."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        tree = OmegaConf.to_container(compose(overrides), resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        msg = " ".join(str(exc).split())
        if type(exc).__name__ == "OverrideParseException":
            msg += (
                " (quote an override with braces or spaces whole, and non-ASCII names inside "
                "it: \"data.mapping.columns={symbol: '代码'}\")"
            )
        elif m := re.match(r"Could not override '([^']+)'", msg):
            msg = unknown_override(m.group(1), overrides) or msg
        raise ConfigError(msg) from exc
    return to_run_config(tree)  # type: ignore[arg-type]
