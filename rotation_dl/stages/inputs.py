"""Inputs several stages share: the store (built on demand), industry bars, adjusted daily
bars with the classification, and industry returns for the backtest."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from rotation_dl.config import RunConfig
from rotation_dl.data.store import read_manifest
from rotation_dl.layout import RunLayout

log = logging.getLogger(__name__)


def layout_of(cfg: RunConfig) -> RunLayout:
    return RunLayout.from_paths(cfg.paths)


def ensure_store(cfg: RunConfig) -> Path:
    """The run's store, ingesting the configured bars first when there is none."""
    layout = layout_of(cfg)
    if read_manifest(layout.store) is None:
        from rotation_dl.stages.ingest import ingest

        log.info("no store at %s: running ingest first", layout.store)
        ingest(cfg)
    return layout.store


def ensure_industry_bars(cfg: RunConfig) -> Path:
    """The run's industry bars, building the store and the bars first when missing."""
    path = layout_of(cfg).industry_bars
    if not path.exists():
        from rotation_dl.stages.industry import industry_bars

        log.info("no industry bars at %s: running ingest and industry-bars first", path)
        ensure_store(cfg)
        industry_bars(cfg)
    return path


def require_classification(cfg: RunConfig) -> str:
    """The classification file's path, or a ConfigError saying it is missing."""
    from rotation_dl.errors import ConfigError

    if not cfg.data.classification:
        raise ConfigError("data.classification is not set: give the stock -> industry file")
    return cfg.data.classification


def read_classification_of(cfg: RunConfig) -> pl.DataFrame:
    from rotation_dl.data.readers import read_classification

    return read_classification(
        require_classification(cfg),
        columns=cfg.data.classification_columns,
        on_missing_industry=cfg.industry.on_missing_industry,
    )


def adjusted_daily_bars(cfg: RunConfig, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Daily stock bars adjusted as the data config says, refused (`AdjustmentError`) when
    their moves beyond the daily price limit say they are not adjusted."""
    from rotation_dl.data.daily import daily_bars
    from rotation_dl.data.limits import check_adjusted

    d = cfg.data
    store = ensure_store(cfg)
    daily = daily_bars(
        store,
        cfg.trading_session(),
        timezone=cfg.market.timezone,
        adjustment=d.adjustment,
        adjustment_columns=d.adjustment_columns,
        adjusted_daily=d.adjusted_daily,
        adjusted_daily_columns=d.adjusted_daily_columns,
        columns=columns,
    )
    if cfg.market.price_limits == "none":  # no daily limits: nothing to check against
        return daily
    source = str(d.adjusted_daily or store)
    check_adjusted(
        daily,
        source,
        max_per_10k=d.max_limit_breaks_per_10k,
        on_unadjusted=d.on_unadjusted,
    )
    return daily


def daily_and_classification(
    cfg: RunConfig, columns: Sequence[str] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Adjusted daily stock bars (only `columns` besides symbol and date, when given) and the
    classification (the store is built when missing)."""
    return adjusted_daily_bars(cfg, columns), read_classification_of(cfg)


def backtest_returns(
    cfg: RunConfig,
    daily: pl.DataFrame | None = None,
    classification: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Industry daily returns from the source `backtest.returns` names."""
    from rotation_dl.backtest.returns import industry_returns

    src = cfg.backtest.returns
    if src == "constituents" and (daily is None or classification is None):
        daily, classification = daily_and_classification(cfg)
    return industry_returns(
        src,
        daily=daily,
        classification=classification,
        industry_bars_path=ensure_industry_bars(cfg) if src == "industry_bars" else None,
        returns_file=cfg.backtest.returns_file,
        weighting=cfg.backtest.weighting,
    )
