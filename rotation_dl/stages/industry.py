"""`industry-bars`: store + classification (+ adjustment) -> industry bars."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from rotation_dl.config import RunConfig
from rotation_dl.industry.build import BuildCarry, IndustryBarsResult, build_industry_bars
from rotation_dl.stages.common import layout_of, require_classification
from rotation_dl.stages.gaps import priced
from rotation_dl.stages.ingest import ensure_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndustryStageResult:
    result: IndustryBarsResult
    path: Path

    def describe(self) -> str:
        return f"industry bars: {self.result.summary()}\n  written: {self.path}"


def build_for(
    cfg: RunConfig,
    output: Path | None,
    *,
    bar_minutes: int | None = None,
    start: date | None = None,
    end: date | None = None,
    chunk_partitions: int | None = None,
    check_adjusted: bool = False,
    carry: BuildCarry | None = None,
) -> IndustryBarsResult:
    """Industry bars from the run's store with the run's data and industry settings: from
    constituent stock bars and the classification, or (data.level=industries) taken from the
    stored industry series as they are. `carry`: continue a build that ended the day before
    `start` (constituent stores; industry series are rebuilt)."""
    cfg = priced(cfg)  # under data.on_unadjusted=drop: the gap factors
    d, ind = cfg.data, cfg.industry
    if d.series:
        from rotation_dl.industry.series import build_series_industry_bars

        return build_series_industry_bars(
            ensure_store(cfg),
            output,
            adjustment=d.adjustment,
            adjustment_columns=d.adjustment_columns,
            bar_minutes=bar_minutes,
            session=cfg.trading_session(),
            start=start,
            end=end,
            store_version=d.store_version,
        )
    return build_industry_bars(
        ensure_store(cfg),
        require_classification(cfg),
        output,
        classification_columns=d.classification_columns,
        adjustment=d.adjustment,
        adjustment_columns=d.adjustment_columns,
        adjusted_daily=d.adjusted_daily,
        adjusted_daily_columns=d.adjusted_daily_columns,
        weighting=ind.weighting,
        bar_minutes=bar_minutes,
        on_unmapped=ind.on_unmapped,
        on_missing_industry=ind.on_missing_industry,
        session=cfg.trading_session(),
        chunk_partitions=chunk_partitions or ind.chunk_partitions,
        start=start,
        end=end,
        factor_tolerance=ind.factor_tolerance,
        max_limit_breaks_per_10k=(
            d.max_limit_breaks_per_10k
            if check_adjusted and cfg.market.price_limits == "ashare"
            else None
        ),
        on_unadjusted=d.on_unadjusted,
        store_version=d.store_version,
        carry=carry,
    )


def industry_bars(cfg: RunConfig) -> IndustryStageResult:
    """Store + classification (or the stored industry series) -> industry bars parquet
    (written atomically); refused, before anything is written, when the stock prices behind
    its cross-day returns look unadjusted."""
    path = layout_of(cfg).industry_bars
    res = build_for(cfg, path, bar_minutes=cfg.industry.bar_minutes, check_adjusted=True)
    return IndustryStageResult(res, path)


def ensure_industry_bars(cfg: RunConfig) -> Path:
    """The run's industry bars, building the store and the bars first when missing."""
    path = layout_of(cfg).industry_bars
    if not path.exists():
        log.info("no industry bars at %s: running ingest and industry-bars first", path)
        ensure_store(cfg)
        industry_bars(cfg)
    return path
