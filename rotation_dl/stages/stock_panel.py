"""The run's stock panel (model.level=stock|pooled): built from the store once, then cached;
and the short one production scoring builds for its latest dates.

The training cache directory is keyed by the feature spec, the code, the storage dtype and the
inputs (store version, the industry bars' hash, the classification's and adjustment files'
hashes), so a changed input never reuses a stale panel.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from rotation_dl.config import RunConfig

log = logging.getLogger(__name__)


def adjustment_factors(
    cfg: RunConfig,
    store: Path,
    daily: bool,
    version: int | None,
    start: date | None = None,
    end: date | None = None,
) -> pl.DataFrame | None:
    """The run's adjustment factors (symbol, date, factor) for stock bars: the factor file,
    factors implied by adjusted daily closes (the industry build's causal rule, over
    [start, end] at once), a daily store's pre_close, or None (prices as stored)."""
    from rotation_dl.data.readers import read_adjustment, read_daily_closes
    from rotation_dl.data.store import scan_store
    from rotation_dl.industry.aggregate import factors_from_adjusted_daily
    from rotation_dl.industry.build import as_bars, pre_close_factors
    from rotation_dl.stages.gaps import priced

    d = priced(cfg).data  # under data.on_unadjusted=drop: the gap factors
    if d.adjustment is not None:
        return read_adjustment(d.adjustment, columns=d.adjustment_columns, start=start, end=end)
    if d.adjusted_daily is not None:
        closes = read_daily_closes(
            d.adjusted_daily, columns=d.adjusted_daily_columns, start=start, end=end
        )
        raw = as_bars(scan_store(store, start, end, version=version), daily)
        return factors_from_adjusted_daily(raw, closes, cfg.industry.factor_tolerance).collect()
    if daily:
        return pre_close_factors(store, end, version)
    return None


def traded_before(
    store: Path, symbols: Sequence[str], first: date, version: int | None, trading_days: int
) -> list[str]:
    """Those of `symbols` without bars on `first` that have bars in the `trading_days` before
    it: back from a suspension rather than newly listed (a short read range cannot tell the
    two apart). Reads that stretch of the store, only for those few symbols; a suspension
    longer than it still counts as a new listing."""
    from rotation_dl.data.store import scan_store
    from rotation_dl.errors import StoreError

    def symbols_in(lf: pl.LazyFrame) -> set[str]:
        return set(lf.select(pl.col("symbol").unique()).collect()["symbol"].to_list())

    on_first = symbols_in(  # (feed placeholders without a price are no bars)
        scan_store(store, first, first, version=version).filter(pl.col("close") > 0)
    )
    late = [s for s in symbols if s not in on_first]
    if not late:
        return []
    try:
        since = first - timedelta(days=int(trading_days * 7 / 5) + 10)  # calendar days
        earlier = scan_store(store, since, first - timedelta(days=1), late, version)
    except StoreError:  # nothing stored before `first`
        return []
    return sorted(symbols_in(earlier))


def build_stock_panel_for(
    cfg: RunConfig,
    spec,  # features.spec.FeatureSpec
    dates: Sequence[date],
    industries: Sequence[str],
    industry_ret: pl.DataFrame | str,
    target: Path,
    *,
    manifest: dict | None = None,
    block_days: int | None = None,
    history: Sequence[date] = (),
    labels: bool = True,
):  # -> StockPanel
    """The stock panel over `dates` (an industry panel's calendar, or scoring's last weeks)
    from the run's store, written to `target`; `block_days` overrides
    `features.stock_block_days` (scoring reads its few weeks in one block); `history`: trading
    days before `dates` read only for the look-back, `labels` False: none (see
    `build_stock_panel`)."""
    from rotation_dl.data.store import scan_store
    from rotation_dl.features.stock_panel import build_stock_panel
    from rotation_dl.industry.build import open_for_build
    from rotation_dl.industry.stock_bars import adjusted_stock_bars
    from rotation_dl.stages.common import read_classification_of
    from rotation_dl.stages.ingest import ensure_store

    d, f = cfg.data, cfg.features
    store = ensure_store(cfg)
    manifest_, version = open_for_build(store, None, d.store_version)
    daily = manifest_.frequency == "daily"
    what = f"model.level={cfg.model.level}"
    cls = read_classification_of(cfg, what)
    lookback = max(spec.volume_window + 1, len(history))
    first = (list(history) or list(dates))[0]
    factors = adjustment_factors(cfg, store, daily, version, first, dates[-1])
    classified = set(cls["symbol"].to_list())
    stored = (
        scan_store(store, dates[0], dates[-1], version=version)
        .filter(pl.col("date" if daily else "ts").cast(pl.Date) >= dates[0])
        .select(pl.col("symbol").unique())
        .collect()
    )
    symbols = sorted(s for s in stored["symbol"].to_list() if s in classified)
    listed_before = traded_before(store, symbols, first, version, len(history)) if history else []

    def blocks(lo: date, hi: date) -> pl.DataFrame:
        return adjusted_stock_bars(
            store,
            lo,
            hi,
            cls,
            daily=daily,
            factors=factors,
            version=version,
            on_unmapped="drop",
            source=str(d.classification),
            bar_minutes=spec.bar_minutes,
            store_minutes=manifest_.bar_minutes,
            session=spec.session,
        )

    log.info("building the stock panel: %d stocks x %d days", len(symbols), len(dates))
    return build_stock_panel(
        blocks,
        industry_ret,
        dates,
        industries,
        symbols,
        spec,
        target,
        lookback_days=lookback,
        block_days=block_days or f.stock_block_days,
        min_listed_days=f.min_listed_days,
        storage=f.stock_storage,
        manifest={**(manifest or {}), "provenance": {"store_version": version}},
        history=history,
        labels=labels,
        listed_before=listed_before,
    )


def stock_panel_for(cfg: RunConfig, panel, industry_bars: Path):  # -> StockPanel
    """The training stock panel over `panel`'s calendar and industries (cached)."""
    from rotation_dl.features.panel import file_hash
    from rotation_dl.features.stock_panel import (
        CorruptPanelError,
        load_stock_panel,
        stock_cache_key,
    )
    from rotation_dl.industry.build import open_for_build
    from rotation_dl.stages.common import layout_of, require_constituents
    from rotation_dl.stages.gaps import priced
    from rotation_dl.stages.ingest import ensure_store

    d, f = priced(cfg).data, cfg.features
    require_constituents(cfg, f"model.level={cfg.model.level}")
    _, version = open_for_build(ensure_store(cfg), None, d.store_version)
    inputs = {
        "store_version": version,
        "industry_bars": panel.source_hash,
        "classification": file_hash(d.classification),
        "adjustment": file_hash(d.adjustment) if d.adjustment else None,
        "adjusted_daily": file_hash(d.adjusted_daily) if d.adjusted_daily else None,
        "min_listed_days": f.min_listed_days,
    }
    key = stock_cache_key(panel.spec, inputs, f.stock_storage)
    target = layout_of(cfg).panel_cache / f"stock-{key}"
    if (target / "manifest.json").exists():
        try:
            panel_ = load_stock_panel(target)
            log.info("stock panel cache hit: %s", target)
            return panel_
        except CorruptPanelError as exc:  # a damaged cache is rebuilt, never trusted
            log.warning("stock panel cache unreadable, rebuilding it (%s)", exc)
            shutil.rmtree(target, ignore_errors=True)
    industry_ret = pl.read_parquet(industry_bars, columns=["industry", "ts", "ret"]).rename(
        {"ret": "ind_ret"}
    )
    return build_stock_panel_for(
        cfg,
        panel.spec,
        panel.dates,
        panel.industries,
        industry_ret,
        target,
        manifest={"inputs": inputs},
    )
