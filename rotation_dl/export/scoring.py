"""Production scoring with onnxruntime: the latest week's industry scores, ranks and holdings.

Needs only polars, numpy, onnx and onnxruntime (the `inference` extra); torch and lightning are
never imported. Features are rebuilt from the canonical store with the model's own feature spec
and normalisation statistics; a model whose spec does not fit the data is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from rotation_dl.artifacts import atomic_write_bytes, atomic_write_parquet
from rotation_dl.backtest.selection import SelectionRule, rank_order, select
from rotation_dl.errors import DataError, ModelFileError, ScoringError
from rotation_dl.export.metadata import read_model
from rotation_dl.features.normalize import NormStats, apply_norm
from rotation_dl.features.panel import build_panel
from rotation_dl.features.spec import FeatureSpec

log = logging.getLogger(__name__)


def providers(prefer: str = "auto") -> list[str]:
    """CUDA execution provider when available (and wanted), CPU otherwise."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if prefer in ("auto", "cuda") and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxScorer:
    """One or several ONNX models (an ensemble averages their scores) sharing one input spec."""

    def __init__(self, paths: Sequence[str | Path], prefer: str = "auto") -> None:
        import onnxruntime as ort

        if not paths:
            raise ModelFileError("no ONNX model files given")
        self.paths = [Path(p) for p in paths]
        self.metas = []
        self.sessions = []
        for p in self.paths:
            model, meta = read_model(p)
            self.metas.append(meta)
            try:
                session = ort.InferenceSession(
                    model.SerializeToString(), providers=providers(prefer)
                )
            except Exception as exc:  # onnxruntime's own errors: one line, the file named
                first = str(exc).strip().splitlines()[0][:200]
                raise ModelFileError(f"{p}: onnxruntime cannot load it ({first})") from exc
            self.sessions.append(session)
        first = self.metas[0]
        for p, m in zip(self.paths[1:], self.metas[1:], strict=True):
            if (
                m["feature_spec"] != first["feature_spec"]
                or m["window"] != first["window"]
                or m["industries"] != first["industries"]
            ):
                raise ModelFileError(
                    f"{p}: feature spec, window or industries differ from "
                    f"{self.paths[0]}; an ensemble needs one input spec"
                )
        try:
            self.spec = FeatureSpec.from_dict(first["feature_spec"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{self.paths[0]}: unreadable feature spec ({exc})") from exc
        declared = int(first.get("input", {}).get("bars_per_day", self.spec.bars_per_day))
        if declared != self.spec.bars_per_day:
            raise ModelFileError(
                f"{self.paths[0]}: metadata disagree: the session gives {self.spec.bars_per_day}"
                f" bars a day, the graph's input takes {declared}"
            )
        self.window = int(first["window"])
        self.industries: list[str] = list(first["industries"])
        self.norms = [NormStats.from_dict(m["norm"]) for m in self.metas]

    @property
    def provider(self) -> str:
        return self.sessions[0].get_providers()[0]

    def run(self, raw_windows: np.ndarray) -> np.ndarray:
        """Raw (un-normalised) windows [B, N, W, P, F] -> mean score over the ensemble [B, N]."""
        outs = []
        for sess, norm in zip(self.sessions, self.norms, strict=True):
            x = apply_norm(raw_windows, norm)
            outs.append(sess.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})[0])
        return np.mean(outs, axis=0)


def latest_complete_week_end(dates: Sequence[date]) -> date:
    """The last trading day of the latest week that is complete: its last day is a Friday, or
    later data exists."""
    ds = sorted(dates)
    week = {d: d - timedelta(days=d.weekday()) for d in ds}
    ends: dict[date, date] = {}
    for d in ds:
        ends[week[d]] = d
    weeks = sorted(ends)
    last = weeks[-1]
    if ends[last].weekday() == 4 or len(weeks) == 1:
        return ends[last]
    return ends[weeks[-2]]


def previous_week_end(dates: Sequence[date], asof: date) -> date | None:
    monday = asof - timedelta(days=asof.weekday())
    before = [d for d in dates if d < monday]
    return max(before) if before else None


@dataclass
class WeeklyScore:
    asof: date
    previous: date | None
    table: pl.DataFrame
    holdings: list[str]
    provider: str


def score_from_industry_bars(
    industry_bars: pl.DataFrame,
    scorer: OnnxScorer,
    *,
    asof: date | None = None,
    rule: SelectionRule | None = None,
    current_holdings: Sequence[str] | None = None,
    bar_minutes: int | None = None,
) -> WeeklyScore:
    """Industry bars -> scores for `asof` (default: the latest complete week's last day) and the
    week before, ranks, rank changes and holdings under the portfolio rule."""
    rule = rule or SelectionRule()
    spec = scorer.spec
    if bar_minutes is not None and bar_minutes != spec.bar_minutes:
        raise ScoringError(
            f"model expects {spec.bar_minutes}-minute bars, data has {bar_minutes}-minute bars"
        )
    have = set(industry_bars["industry"].unique().to_list())
    missing = [i for i in scorer.industries if i not in have]
    if missing:
        raise ScoringError(
            f"{len(missing)} industr{'y' if len(missing) == 1 else 'ies'} the "
            f"model was trained on are missing from the data: {missing[:5]}"
        )
    ib = industry_bars.filter(pl.col("industry").is_in(scorer.industries))
    panel = build_panel(ib, spec)
    if panel.bars_per_day != spec.bars_per_day:
        raise ScoringError("bars per day of the data differ from the model's feature spec")
    dates = panel.dates
    asof = asof or latest_complete_week_end(dates)
    if asof not in dates:
        raise ScoringError(f"{asof} is not a trading day in the data ({dates[0]}..{dates[-1]})")
    idx = dates.index(asof)
    need = spec.warmup_days(scorer.window) - 1  # index of the first scorable day
    if idx < need:
        raise ScoringError(
            f"{asof}: not enough history: needs {need + 1} trading days up to it, "
            f"the data has {idx + 1}"
        )
    prev = previous_week_end(dates, asof)
    days = [idx] + ([dates.index(prev)] if prev is not None and dates.index(prev) >= need else [])
    order = [panel.industries.index(i) for i in scorer.industries]
    x = panel.windows(days, scorer.window, order)  # [B, N, W, P, F]
    scores = scorer.run(x)
    active = np.asarray(panel.active)[:, order]
    now = {
        ind: (float(scores[0, j]) if active[idx, j] else None)
        for j, ind in enumerate(scorer.industries)
    }
    before = (
        {
            ind: (float(scores[1, j]) if active[days[1], j] else None)
            for j, ind in enumerate(scorer.industries)
        }
        if len(days) > 1
        else {}
    )
    held_before = (
        list(current_holdings)
        if current_holdings is not None
        else (select(before, [], rule) if before else [])
    )
    holdings = select(now, held_before, rule)
    rank_now = {ind: r for r, ind in enumerate(rank_order(now), 1)}
    rank_prev = {ind: r for r, ind in enumerate(rank_order(before), 1)} if before else {}
    rows = []
    for ind in scorer.industries:
        held, was = ind in holdings, ind in held_before
        rows.append(
            {
                "industry": ind,
                "score": now[ind],
                "rank": rank_now[ind],
                "prev_score": before.get(ind),
                "prev_rank": rank_prev.get(ind),
                "rank_change": (rank_prev[ind] - rank_now[ind]) if ind in rank_prev else None,
                "held": held,
                "action": "buy"
                if held and not was
                else "sell"
                if was and not held
                else "hold"
                if held
                else "",
            }
        )
    table = pl.DataFrame(
        rows,
        schema_overrides={
            "prev_score": pl.Float64,
            "prev_rank": pl.Int64,
            "rank_change": pl.Int64,
            "score": pl.Float64,
        },
    )
    return WeeklyScore(asof, prev, table.sort("rank"), holdings, scorer.provider)


def write_score(
    result: WeeklyScore, parquet: Path, csv: Path, json_path: Path, models: Sequence[Path]
) -> dict:
    """The score table as parquet and CSV and a JSON payload (holdings, provider, models),
    each written atomically; returns the payload."""
    atomic_write_parquet(result.table, parquet)
    atomic_write_bytes(csv, result.table.write_csv().encode())
    payload = {
        "asof": str(result.asof),
        "previous": str(result.previous),
        "holdings": result.holdings,
        "provider": result.provider,
        "models": [str(m) for m in models],
        "table": result.table.to_dicts(),
    }
    atomic_write_bytes(json_path, json.dumps(payload, indent=2, default=str).encode())
    return payload


def read_holdings(path: str | Path) -> list[str]:
    """Current holdings: a CSV/parquet with an `industry` column, or a JSON score output."""
    p = Path(path)
    if not p.exists():
        raise DataError("no such holdings file", file=str(p))
    if p.suffix == ".json":
        return list(json.loads(p.read_text())["holdings"])
    df = pl.read_parquet(p) if p.suffix == ".parquet" else pl.read_csv(p)
    if "industry" not in df.columns:
        raise DataError("holdings file needs an 'industry' column", file=str(p), column="industry")
    if "held" in df.columns:
        df = df.filter(pl.col("held"))
    return df["industry"].cast(pl.String).to_list()
