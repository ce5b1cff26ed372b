"""Inputs several stages share: the store (built on demand), industry bars, adjusted daily
bars with the classification, and industry returns for the backtest."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from rotation_dl.config import RunConfig
from rotation_dl.data.store import read_manifest, stored_partitions
from rotation_dl.errors import StoreError
from rotation_dl.layout import RunLayout

log = logging.getLogger(__name__)


def layout_of(cfg: RunConfig) -> RunLayout:
    return RunLayout.from_paths(cfg.paths)


def ensure_store(cfg: RunConfig) -> Path:
    """The run's store, ingesting the configured bars first when there is none (never when
    an older version is asked for: `data.store_version`)."""
    layout = layout_of(cfg)
    if cfg.data.store_version is not None:
        from rotation_dl.data.store import resolve_version

        if read_manifest(layout.store) is None:
            raise StoreError(
                f"{layout.store}: no store to read version {cfg.data.store_version} of"
            )
        resolve_version(layout.store, cfg.data.store_version)
        return layout.store
    if read_manifest(layout.store) is None or not stored_partitions(layout.store):
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


def require_constituents(cfg: RunConfig, what: str) -> None:
    """Refuse (ConfigError) a stage that needs constituent stocks when the data are industry
    series."""
    from rotation_dl.errors import ConfigError

    if cfg.data.series:
        raise ConfigError(
            f"{what} needs constituent stock bars and a classification; data.level=industries "
            "(data=industry_series) holds industry series only"
        )


def require_classification(cfg: RunConfig, what: str = "industry bars from stocks") -> str:
    """The classification file's path, or a ConfigError saying it is missing (or that the
    data are industry series, which have none)."""
    from rotation_dl.errors import ConfigError

    require_constituents(cfg, what)
    if not cfg.data.classification:
        raise ConfigError(
            f"{what} needs data.classification (the stock -> industry file), which is not "
            "set; for bars that are already industry series use data=industry_series"
        )
    return cfg.data.classification


def read_classification_of(cfg: RunConfig, what: str = "this stage") -> pl.DataFrame:
    from rotation_dl.data.readers import read_classification

    return read_classification(
        require_classification(cfg, what),
        columns=cfg.data.classification_columns,
        on_missing_industry=cfg.industry.on_missing_industry,
    )


def adjusted_daily_bars(cfg: RunConfig, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Daily stock bars adjusted as the data config says, refused (`AdjustmentError`) when
    their moves beyond the daily price limit say they are not adjusted."""
    from rotation_dl.data.daily import daily_bars
    from rotation_dl.data.limits import check_adjusted

    d = cfg.data
    require_constituents(cfg, "adjusted daily stock bars")
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
        store_version=d.store_version,
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
    cfg: RunConfig, columns: Sequence[str] | None = None, what: str = "this stage"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Adjusted daily stock bars (only `columns` besides symbol and date, when given) and the
    classification (the store is built when missing); `what` names the stage in refusals."""
    require_classification(cfg, what)  # a missing setting is refused before any work
    daily = adjusted_daily_bars(cfg, columns)  # (the sample market is generated here)
    return daily, read_classification_of(cfg, what)


def backtest_returns(
    cfg: RunConfig,
    daily: pl.DataFrame | None = None,
    classification: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Industry daily returns from the source `backtest.returns` names."""
    from rotation_dl.backtest.returns import industry_returns

    src = cfg.backtest.returns
    if src == "auto":  # constituents when there are any, else the industry series themselves
        src = "industry_bars" if cfg.data.series else "constituents"
    if src == "constituents" and (daily is None or classification is None):
        daily, classification = daily_and_classification(cfg, what="constituent returns")
    return industry_returns(
        src,
        daily=daily,
        classification=classification,
        industry_bars_path=ensure_industry_bars(cfg) if src == "industry_bars" else None,
        returns_file=cfg.backtest.returns_file,
        weighting=cfg.backtest.weighting,
    )
