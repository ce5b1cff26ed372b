"""Inputs several stages share, built on demand: adjusted daily
bars with the classification, and industry returns for the backtest."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import polars as pl

from rotation_dl.config import RunConfig
from rotation_dl.stages.common import (
    read_classification_of,
    require_classification,
    require_constituents,
)
from rotation_dl.stages.gaps import priced
from rotation_dl.stages.industry import ensure_industry_bars
from rotation_dl.stages.ingest import ensure_store

log = logging.getLogger(__name__)


def adjusted_daily_bars(cfg: RunConfig, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Daily stock bars adjusted as the data config says, refused (`AdjustmentError`) when
    their moves beyond the daily price limit say they are not adjusted."""
    from rotation_dl.data.limits import check_adjusted
    from rotation_dl.industry.daily import daily_bars

    require_constituents(cfg, "adjusted daily stock bars")
    cfg = priced(cfg)  # under data.on_unadjusted=drop: the gap factors
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


def returns_source(cfg: RunConfig) -> str:
    """The industry returns the backtest (and its IC) use, resolved from `backtest.returns`."""
    src = cfg.backtest.returns
    if src == "auto":
        src = "industry_bars" if cfg.data.series else "constituents"
    return src


def ic_label(cfg: RunConfig) -> str:
    """What the backtest's and the report's rank IC are measured against, in words."""
    src = returns_source(cfg)
    what = {
        "constituents": f"constituent returns ({cfg.backtest.weighting}-weighted)",
        "industry_bars": "industry-bar returns",
        "file": f"the returns file {cfg.backtest.returns_file}",
    }[src]
    return f"forward {cfg.backtest.horizon}-day excess of {what}"


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
