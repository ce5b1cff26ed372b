"""`data.on_unadjusted`: the data's unexplained limit moves, counted once per store version,
left out as overnight moves under `drop` (factors every price reader then applies), and said
as a caveat by every output built from such data (`warn` or `drop`)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

from rotation_dl.artifacts import atomic_write_bytes, atomic_write_parquet
from rotation_dl.config import RunConfig
from rotation_dl.stages.common import layout_of
from rotation_dl.stages.ingest import ensure_store

log = logging.getLogger(__name__)


def _key(cfg: RunConfig, version: int) -> str:
    d = cfg.data
    parts = (version, d.adjustment, d.adjustment_columns, d.adjusted_daily,
             d.adjusted_daily_columns, cfg.market.session, cfg.market.timezone)  # fmt: skip
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def gap_report(cfg: RunConfig) -> dict | None:
    """The run's unexplained-limit-move report (None when not asked for: `on_unadjusted=fail`,
    no price limits in the market, or industry series). Computed once per store version and
    adjustment settings; under `drop` the gap factors are written beside it."""
    d = cfg.data
    if d.on_unadjusted == "fail" or d.series or cfg.market.price_limits == "none":
        return None
    if d.adjustment == str(layout_of(cfg).gap_factors):  # a config `priced` already made
        return None
    from rotation_dl.data.limits import limit_breaks
    from rotation_dl.data.store import resolve_version
    from rotation_dl.industry.daily import daily_bars, raw_daily_closes
    from rotation_dl.industry.gaps import gap_factors, gap_summary

    layout = layout_of(cfg)
    store = ensure_store(cfg)
    key = _key(cfg, resolve_version(store, d.store_version))
    path = layout.gap_report
    if path.exists():
        cached = json.loads(path.read_text())
        if (
            cached.get("key") == key
            and cached["policy"] == d.on_unadjusted
            and (d.on_unadjusted != "drop" or layout.gap_factors.exists())
        ):
            return cached
    adjusted = daily_bars(
        store, cfg.trading_session(), timezone=cfg.market.timezone,
        adjustment=d.adjustment, adjustment_columns=d.adjustment_columns,
        adjusted_daily=d.adjusted_daily, adjusted_daily_columns=d.adjusted_daily_columns,
        columns=["open", "close", "volume"], store_version=d.store_version,
    )  # fmt: skip
    check = limit_breaks(adjusted)
    summary = {**gap_summary(check, d.on_unadjusted), "key": key}
    if d.on_unadjusted == "drop":
        raw = raw_daily_closes(store, cfg.trading_session(), d.store_version)
        atomic_write_parquet(gap_factors(adjusted, raw, check), layout.gap_factors)
    atomic_write_bytes(path, json.dumps(summary, indent=2, default=str).encode())
    log.info("%s: %d unexplained limit move(s) (%s)", store, check.breaks.height, d.on_unadjusted)
    return summary


def priced(cfg: RunConfig) -> RunConfig:
    """The run config every price reader uses: under `data.on_unadjusted=drop`, the gap
    factors (which include the configured adjustment) replace the adjustment settings;
    otherwise `cfg` itself."""
    if cfg.data.on_unadjusted != "drop" or gap_report(cfg) is None:
        return cfg
    factors = Path(layout_of(cfg).gap_factors)
    data = replace(
        cfg.data,
        adjustment=str(factors),
        adjustment_columns={},
        adjusted_daily=None,
        adjusted_daily_columns={},
        on_unadjusted="warn",  # what is left is explained: the moves were taken out
    )
    return replace(cfg, data=data)


def data_caveats(cfg: RunConfig) -> list[str]:
    """The lines every summary, score file and report built from this data must carry."""
    from rotation_dl.industry.gaps import caveat_text

    report = gap_report(cfg)
    text = caveat_text(report) if report else None
    return [text] if text else []
