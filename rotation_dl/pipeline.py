"""Stage functions that chain the library: each takes plain arguments and writes one artifact.

Entry points (the CLI, tests, notebooks) call these; they never read global configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from rotation_dl.data.industry import Weighting, factors_from_adjusted_daily, industry_bars
from rotation_dl.data.readers import read_adjustment, read_classification, read_daily_closes
from rotation_dl.data.resample import resample_bars
from rotation_dl.data.store import atomic_write_parquet, read_manifest, scan_store
from rotation_dl.errors import ConfigError, StoreError
from rotation_dl.session import A_SHARE, Session

log = logging.getLogger(__name__)


@dataclass
class IndustryBarsResult:
    path: Path
    frame: pl.DataFrame
    bar_minutes: int

    def summary(self) -> str:
        f = self.frame
        days = f["date"].n_unique()
        active = f.filter(pl.col("n_active") > 0)
        return (
            f"{f['industry'].n_unique()} industries x {days} days x "
            f"{f.height // max(1, days * f['industry'].n_unique())} bars/day "
            f"({self.bar_minutes}-min), {f.height:,} rows; mean active constituents per bar "
            f"{active['n_active'].mean():.1f}; bars with no trading constituent: "
            f"{f.height - active.height}"
        )


def build_industry_bars(
    store: str | Path,
    classification: str | Path,
    output: str | Path,
    *,
    classification_columns: Mapping[str, str] | None = None,
    adjustment: str | Path | None = None,
    adjustment_columns: Mapping[str, str] | None = None,
    adjusted_daily: str | Path | None = None,
    adjusted_daily_columns: Mapping[str, str] | None = None,
    weighting: Weighting = "equal",
    bar_minutes: int | None = None,
    on_unmapped: Literal["fail", "drop"] = "fail",
    on_missing_industry: Literal["fail", "drop"] = "fail",
    session: Session = A_SHARE,
) -> IndustryBarsResult:
    """Store + classification (+ adjustment) -> industry bars parquet at `output` (atomic)."""
    manifest = read_manifest(Path(store))
    if manifest is None:
        raise StoreError(f"{store}: not a rotation_dl store; run `rotation-dl ingest` first")
    if manifest.frequency != "intraday":
        raise ConfigError("industry bars need an intraday store; this store holds daily bars")
    bars = scan_store(store)
    size = manifest.bar_minutes
    if bar_minutes and bar_minutes != size:
        bars = resample_bars(bars, bar_minutes, session, source_minutes=size)
        size = bar_minutes
    cls = read_classification(
        classification, columns=classification_columns, on_missing_industry=on_missing_industry
    )
    factors = None
    if adjustment is not None:
        factors = read_adjustment(adjustment, columns=adjustment_columns)
    elif adjusted_daily is not None:
        closes = read_daily_closes(adjusted_daily, columns=adjusted_daily_columns)
        factors = factors_from_adjusted_daily(bars, closes).collect()
    frame = industry_bars(
        bars, cls, weighting=weighting, adjustment=factors, on_unmapped=on_unmapped,
        presorted=True,  # store scans and resample output are in time order per symbol
    ).collect()
    out = Path(output)
    atomic_write_parquet(frame, out)
    return IndustryBarsResult(out, frame, size)
