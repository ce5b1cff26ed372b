"""Stage functions that chain the library: each takes plain arguments and writes one artifact.

Entry points (the CLI, tests, notebooks) call these; they never read global configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import polars as pl

from rotation_dl.data.industry import (
    Weighting,
    add_return_index,
    add_vwap_gap,
    adjust_bars,
    aggregate_industry_returns,
    factors_from_adjusted_daily,
    map_industries,
    stock_bar_returns,
)
from rotation_dl.data.readers import read_adjustment, read_classification, read_daily_closes
from rotation_dl.data.resample import resample_bars
from rotation_dl.data.store import (
    atomic_write_parquet,
    read_manifest,
    scan_store,
    stored_partitions,
)
from rotation_dl.errors import ConfigError, StoreError
from rotation_dl.session import A_SHARE, Session

log = logging.getLogger(__name__)


@dataclass
class IndustryBarsResult:
    path: Path | None
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


def _chunks(names: list[str], size: int) -> list[list[str]]:
    return [names[i : i + size] for i in range(0, len(names), size)]


def _partition_dates(names: list[str]) -> tuple[date, date]:
    first, last = names[0].split("=", 1)[1], names[-1].split("=", 1)[1]
    lo = date.fromisoformat(first if len(first) == 10 else first + "-01")
    hi = date.fromisoformat(last if len(last) == 10 else last + "-28")
    if len(last) != 10:  # month partition: run to the month's end
        hi = date(hi.year + (hi.month == 12), hi.month % 12 + 1, 1) - timedelta(days=1)
    return lo, hi


def build_industry_bars(
    store: str | Path,
    classification: str | Path,
    output: str | Path | None,
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
    chunk_partitions: int = 10,
    start: date | None = None,
    end: date | None = None,
) -> IndustryBarsResult:
    """Store + classification (+ adjustment) -> industry bars parquet at `output` (atomic).

    Streams the store `chunk_partitions` partitions at a time, carrying each stock's last
    (adjusted) close and each industry's index level into the next chunk, so memory stays flat
    as history grows and the result equals a single pass over all of it. `start`/`end` limit the
    dates read; `output=None` skips writing.
    """
    manifest = read_manifest(Path(store))
    if manifest is None:
        raise StoreError(f"{store}: not a rotation_dl store; run `rotation-dl ingest` first")
    if manifest.frequency != "intraday":
        raise ConfigError("industry bars need an intraday store; this store holds daily bars")
    size = manifest.bar_minutes
    cls = read_classification(
        classification, columns=classification_columns, on_missing_industry=on_missing_industry
    )
    factors: pl.DataFrame | None = None
    closes: pl.DataFrame | None = None
    if adjustment is not None:
        factors = read_adjustment(adjustment, columns=adjustment_columns)
    elif adjusted_daily is not None:  # factors come from each chunk's own raw closes below
        closes = read_daily_closes(
            adjusted_daily, columns=adjusted_daily_columns, start=start, end=end
        )
    spans = {n: _partition_dates([n]) for n in stored_partitions(Path(store))}
    names = [
        n
        for n, (lo, hi) in spans.items()
        if (start is None or hi >= start) and (end is None or lo <= end)
    ]
    if not names:
        raise StoreError(f"{store}: no stored bars between {start} and {end}")
    carry_close: pl.DataFrame | None = None
    carry_level: pl.DataFrame | None = None
    parts: list[pl.DataFrame] = []
    industries: set[str] = set()
    for chunk in _chunks(names, chunk_partitions):
        lo, hi = _partition_dates(chunk)
        lo, hi = max(lo, start or lo), min(hi, end or hi)
        bars = scan_store(store, lo, hi).collect().lazy()  # one read of the chunk
        if closes is not None:
            factors = factors_from_adjusted_daily(bars, closes).collect()
        if bar_minutes and bar_minutes != manifest.bar_minutes:
            bars = resample_bars(bars, bar_minutes, session, source_minutes=manifest.bar_minutes)
            size = bar_minutes
        bars = add_vwap_gap(bars)
        if factors is not None:
            bars = adjust_bars(bars, factors.filter(pl.col("date").is_between(lo, hi)).lazy())
        mapped = map_industries(bars, cls, on_unmapped)
        stock = stock_bar_returns(mapped, presorted=True, prev_close=carry_close).collect()
        if stock.is_empty():
            continue
        chunk_industries = stock["industry"].unique()
        industries.update(chunk_industries.to_list())
        agg = aggregate_industry_returns(stock.lazy(), weighting)
        part = add_return_index(
            agg, sorted(industries), stock["ts"].unique(), weighting, carry_level
        ).collect()
        parts.append(part)
        last = stock.group_by("symbol").agg(pl.col("close").last().alias("prev_close"))
        carry_close = (
            last
            if carry_close is None
            else pl.concat([carry_close.join(last, on="symbol", how="anti"), last])
        )
        carry_level = part.group_by("industry").agg(
            pl.col("close").sort_by("ts").last().alias("level")
        )
    if not parts:
        raise StoreError(f"{store}: no bars to aggregate")
    frame = _complete_grid(pl.concat(parts), sorted(industries))
    if start is not None or end is not None:
        frame = frame.filter(pl.col("date").is_between(start or date.min, end or date.max))
    out = Path(output) if output is not None else None
    if out is not None:
        atomic_write_parquet(frame, out)
    return IndustryBarsResult(out, frame, size)


def _complete_grid(frame: pl.DataFrame, industries: list[str]) -> pl.DataFrame:
    """Add rows for industries first seen in a later chunk (flat index, n_active = 0)."""
    expected = len(industries) * frame["ts"].n_unique()
    if frame.height == expected:
        return frame.sort("industry", "ts")
    grid = pl.DataFrame({"industry": industries}).join(
        frame.select(pl.col("ts").unique()), how="cross"
    )
    full = grid.join(frame, on=["industry", "ts"], how="left").sort("industry", "ts")
    level = pl.col("close").forward_fill().over("industry").fill_null(1.0)
    return full.with_columns(
        pl.col("n_active").fill_null(0),
        pl.col("volume").fill_null(0.0),
        pl.col("amount").fill_null(0.0),
        pl.col("ts").dt.date().alias("date"),
        *[pl.col(c).fill_null(level) for c in ("open", "high", "low", "close")],
    ).select(frame.columns)


def is_rank_zero() -> bool:
    """True unless this process is a non-zero rank of a distributed (DDP) run."""
    import os

    try:
        from lightning.pytorch.utilities import rank_zero_only

        rank = getattr(rank_zero_only, "rank", None)
    except ImportError:
        rank = None
    if rank is None:
        rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    return int(rank) == 0


def infer_bar_minutes(industry_bars: pl.DataFrame | pl.LazyFrame) -> int:
    """Bar size of industry bars: the smallest gap between bars of one day (0 if daily)."""
    gaps = (
        industry_bars.lazy()
        .select("industry", "ts")
        .sort("industry", "ts")
        .select(
            (pl.col("ts").diff().dt.total_minutes())
            .over("industry", pl.col("ts").dt.date())
            .alias("g")
        )
        .filter(pl.col("g") > 0)
        .select(pl.col("g").min())
        .collect()
        .item()
    )
    return int(gaps) if gaps is not None else 0


@dataclass
class TrainOutcome:
    factor_panel_path: Path
    metrics_path: Path
    metrics: dict


def train_walk_forward(
    industry_bars_path: str | Path,
    output_dir: str | Path,
    checkpoint_dir: str | Path,
    panel_cache: str | Path,
    *,
    features: list[str],
    horizon: int,
    volume_window: int,
    min_constituents: int,
    window: int,
    net: dict,
    train: dict,
    walkforward: dict,
    seeds: list[int],
    resume: bool = False,
    logger: dict | None = None,
    run: str = "run",
    session: Session = A_SHARE,
    meta: dict | None = None,
    extra_callbacks=None,
) -> TrainOutcome:
    """Industry bars -> cached panel -> walk-forward GRU -> factor_panel.parquet + metrics.

    Returns the paths and the metrics: out-of-sample IC summaries of the concatenated test
    scores, and the mean best validation rank IC over folds (the sweep objective).
    """
    import json

    from rotation_dl.backtest.ic import ic_series, summarize_ic
    from rotation_dl.data.walkforward import walk_forward_folds
    from rotation_dl.features.panel import FeatureSpec, cached_panel
    from rotation_dl.models.gru import GRUConfig
    from rotation_dl.models.tracking import logger_factory
    from rotation_dl.models.train import TrainConfig, code_version, run_walk_forward

    bar_minutes = infer_bar_minutes(pl.scan_parquet(industry_bars_path))
    spec = FeatureSpec(tuple(features), bar_minutes, horizon, volume_window, min_constituents)
    panel = cached_panel(industry_bars_path, spec, panel_cache, session)
    folds = walk_forward_folds(
        len(panel.dates), warmup=window + max(1, volume_window // 4), **walkforward
    )
    net_cfg = GRUConfig(n_features=panel.n_features, **net)
    tc = TrainConfig(window=window, **train)
    hparams = {
        "run": run,
        "net": net_cfg.to_dict(),
        "train": {**train, "window": window},
        "features": spec.to_dict(),
        "walkforward": walkforward,
        "seeds": list(seeds),
        "data_hash": panel.source_hash,
        "code_version": code_version(),
        **(meta or {}),
    }
    lg = logger or {"kind": "csv"}
    factory = logger_factory(
        lg.get("kind", "csv"),
        Path(output_dir) / "logs",
        run,
        hparams,
        lg.get("project", "rotation_dl"),
        lg.get("entity"),
        lg.get("group"),
    )
    result = run_walk_forward(
        panel,
        folds,
        net_cfg,
        tc,
        checkpoint_dir,
        seeds,
        resume,
        factory,
        meta={"data_hash": panel.source_hash, "run": run, "code_version": code_version()},
        extra_callbacks=extra_callbacks,
    )
    out = Path(output_dir)
    fp_path = out / "factor_panel.parquet"
    if not is_rank_zero():  # distributed training: artifacts come from rank zero only
        return TrainOutcome(fp_path, out / "train_metrics.json", {})
    atomic_write_parquet(result.factor_panel, fp_path)
    labels = panel_labels(panel)
    ic = ic_series(result.factor_panel, labels)
    metrics = {
        "run": run,
        "folds": len(folds),
        "test_dates": int(result.factor_panel["date"].n_unique()),
        "oos_rank_ic": summarize_ic(ic["rank_ic"]).to_dict(),
        "oos_ic": summarize_ic(ic["ic"]).to_dict(),
        "mean_val_rank_ic": result.mean_val_rank_ic,
        "fold_results": result.folds,
        "model_version": result.factor_panel["model_version"][0],
        "data_range": [str(panel.dates[0]), str(panel.dates[-1])],
        "hparams": hparams,
    }
    m_path = out / "train_metrics.json"
    from rotation_dl.data.store import atomic_write_bytes

    atomic_write_bytes(m_path, json.dumps(metrics, indent=2, default=str).encode())
    return TrainOutcome(fp_path, m_path, metrics)


def panel_labels(panel) -> pl.DataFrame:
    """(date, industry, fwd_ret, fwd_excess, label) from a Panel (NaN -> null)."""
    import numpy as np

    n, d = len(panel.industries), len(panel.dates)
    fwd = np.asarray(panel.fwd_ret, dtype=np.float64)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            mean = np.nanmean(np.where(panel.active, fwd, np.nan), axis=1, keepdims=True)
    excess = fwd - mean
    return pl.DataFrame(
        {
            "date": np.repeat(np.asarray(panel.dates, dtype="datetime64[D]"), n),
            "industry": np.tile(np.asarray(panel.industries), d),
            "fwd_ret": fwd.reshape(-1),
            "fwd_excess": np.where(panel.active, excess, np.nan).reshape(-1),
            "label": np.asarray(panel.label, dtype=np.float64).reshape(-1),
        }
    ).with_columns(
        pl.col("date").cast(pl.Date), pl.col("fwd_ret", "fwd_excess", "label").fill_nan(None)
    )
