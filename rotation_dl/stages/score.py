"""`score`: the latest complete week (or score.asof) scored with onnxruntime from the store:
scores, ranks, rank changes and holdings. Imports neither torch nor lightning."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from rotation_dl.config import RunConfig
from rotation_dl.data.store import partition_span, scan_store, stored_partitions
from rotation_dl.errors import ModelFileError, StoreError
from rotation_dl.export.scoring import WeeklyScore
from rotation_dl.stages.common import layout_of
from rotation_dl.stages.gaps import data_caveats
from rotation_dl.stages.ingest import existing_store


def score_range(
    store: Path, asof: date | None, lookback_days: int, version: int | None = None
) -> tuple[date, date | None]:
    """Calendar dates to read: enough trading days before `asof` (or the store's last day) for
    the window and the feature warm-up."""
    names = stored_partitions(store, version)
    if not names:
        raise StoreError(f"{store}: empty store")
    end = asof or partition_span(names[-1])[1]
    return end - timedelta(days=int(lookback_days * 7 / 5) + 10), asof


def store_last_date(store: Path, version: int | None = None) -> date:
    """The last day with a stored bar (reads the last partition's timestamps only)."""
    names = stored_partitions(store, version)
    if not names:
        raise StoreError(f"{store}: empty store")
    first = partition_span(names[-1])[0]
    ts = scan_store(store, first, None, version=version).select(pl.col("ts").max()).collect()
    return ts.item().date()


def table_text(table: pl.DataFrame) -> str:
    lines = [f"{'rank':>4}  {'industry':<12} {'score':>9} {'chg':>4}  held"]
    for r in table.to_dicts():  # a ~30-row printout
        chg = "" if r["rank_change"] is None else f"{r['rank_change']:+d}"
        score = "   -" if r["score"] is None else f"{r['score']:9.4f}"
        lines.append(
            f"{r['rank']:>4}  {r['industry']:<12} {score:>9} {chg:>4}  "
            f"{'*' if r['held'] else ''} {r['action']}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class ScoreResult:
    score: WeeklyScore
    payload: dict
    models: list[Path]
    out_dir: Path

    def describe(self) -> str:
        s = self.score
        warning = f"warning: {s.warning()}\n" if s.missing else ""
        warning += "".join(f"caveat: {c}\n" for c in self.payload.get("data_caveats", []))
        return (
            f"{warning}score {s.asof} (vs {s.previous}), {len(self.models)} model(s) on "
            f"{s.provider}:\n{table_text(s.table)}\nholdings: {', '.join(s.holdings)}\n"
            f"  outputs: {self.out_dir}"
        )


def score(cfg: RunConfig) -> ScoreResult:
    """Score the latest complete week (or score.asof) with ONNX Runtime: ranks and holdings."""
    from rotation_dl.export.scoring import (
        OnnxScorer,
        read_holdings,
        score_from_industry_bars,
        write_score,
    )
    from rotation_dl.stages.industry import build_for

    s = cfg.score
    layout = layout_of(cfg)
    models = [Path(m) for m in s.models] if s.models else layout.onnx_models()
    if not models:
        raise ModelFileError(f"no ONNX models under {layout.onnx_dir}; run `rotation-dl export`")
    scorer = OnnxScorer(models, prefer=s.providers)
    store = existing_store(cfg, "score")
    asof = date.fromisoformat(str(s.asof)) if s.asof else None
    if asof is not None and asof > (last := store_last_date(store, cfg.data.store_version)):
        raise StoreError(
            f"{store}: the store ends {last}, before score.asof={asof}; `score` never writes "
            "the store: run `rotation-dl ingest` with the new bars first"
        )
    if scorer.level != "industry":  # what its windows and volume baselines need, no more
        lookback = scorer.window + history_days(scorer.spec, cfg.features.min_listed_days) + 6
    else:
        lookback = s.lookback_days
    start, end = score_range(store, asof, lookback, cfg.data.store_version)
    cfg_for_model = cfg
    if scorer.spec.session != cfg.trading_session():  # the model's own session decides
        from dataclasses import replace

        session = tuple(map(tuple, scorer.spec.session.to_strings()))
        cfg_for_model = replace(cfg, market=replace(cfg.market, session=session))
    holdings = read_holdings(s.holdings) if s.holdings else None
    rule = cfg.portfolio.rule(len(scorer.industries))
    if scorer.level == "industry":
        ib = build_for(
            cfg_for_model,
            None,
            bar_minutes=scorer.spec.bar_minutes or None,
            start=start,
            end=end,
            chunk_partitions=10_000,  # a few weeks of bars: one pass
        )
        result = score_from_industry_bars(
            ib.frame,
            scorer,
            asof=asof,
            rule=rule,
            current_holdings=holdings,
            bar_minutes=ib.bar_minutes,
            on_missing_industry=s.on_missing_industry,
        )
    else:
        result = score_constituents(cfg_for_model, scorer, store, start, end, asof, rule, holdings)
    payload = write_score(
        result,
        layout.score_file(result.asof),
        layout.score_file(result.asof, ".csv"),
        layout.score_file(result.asof, ".json"),
        scorer.paths,
        caveats=data_caveats(cfg) if not cfg.data.series else (),
    )
    return ScoreResult(result, payload, models, layout.score_dir)


def score_constituents(cfg, scorer, store: Path, start, end, asof, rule, holdings):
    """A constituent model: the stock panel of [start, end] (built in a temporary folder
    beside the scores, removed afterwards, and a killed run's swept by the next; industry
    returns from the same stock bars, no industry-bar build) -> every stock's window -> stock
    and industry scores."""
    import shutil

    from rotation_dl.artifacts import remove_stale_temp_dirs, temp_dir_for
    from rotation_dl.errors import ScoringError
    from rotation_dl.export.scoring import (
        missing_industries_error,
        score_from_stock_panel,
        scored_days,
    )
    from rotation_dl.stages.stock_panel import build_stock_panel_for

    days = scan_trading_days(store, start, end, cfg.data.store_version)
    if not days:
        raise ScoringError(f"{store}: no bars between {start} and {end}")
    spec, window = scorer.spec, scorer.window
    asof, _, scored = scored_days(days, asof, spec.warmup_days(window), 0, window)
    first = min(scored) - window + 1  # the panel holds the scored windows' days only ...
    read_from = max(0, first - history_days(spec, cfg.features.min_listed_days))
    history, panel_days = days[read_from:first], days[first : scored[0] + 1]
    target = layout_of(cfg).score_dir / "panel"
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(target)  # the panels of killed runs
    work = temp_dir_for(target)  # this run's (its pid in the name)
    try:
        sp = build_stock_panel_for(  # ... and reads their baselines' days before them
            cfg,
            spec,
            panel_days,
            scorer.industries,
            cfg.industry.weighting,
            work / "panel",
            block_days=len(panel_days),  # a few weeks: one read of the store
            history=history,
            labels=False,
        )
        present = set(np.unique(np.asarray(sp.member)[np.asarray(sp.member) >= 0]).tolist())
        missing = [ind for k, ind in enumerate(scorer.industries) if k not in present]
        if missing and (
            cfg.score.on_missing_industry == "fail" or len(missing) == len(scorer.industries)
        ):
            raise missing_industries_error(missing, "have no stocks in the data")
        result = score_from_stock_panel(
            sp, scorer, asof=asof, rule=rule, current_holdings=holdings, history=len(history)
        )
        del sp  # the memory-mapped arrays close before their folder goes
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def history_days(spec, min_listed_days: int | None) -> int:
    """Trading days a constituent model's scoring reads before its first window day: the
    volume baselines and previous close, and the listing age that makes a stock active."""
    listed = spec.volume_window if min_listed_days is None else min_listed_days
    return max(spec.volume_window + 1, listed)


def scan_trading_days(store: Path, start, end, version: int | None) -> list:
    """The distinct trading days with bars in [start, end] (end None: to the last)."""
    from rotation_dl.data.store import read_manifest, scan_store

    daily = read_manifest(store).frequency == "daily"
    day = pl.col("date") if daily else pl.col("ts").dt.date()
    rows = scan_store(store, start, end, version=version).select(day.unique().alias("d"))
    found = rows.collect()["d"].to_list()
    return sorted(d for d in found if d >= start and (end is None or d <= end))
