"""Production scoring with onnxruntime: the latest week's industry scores, ranks and holdings.

Needs only polars, numpy, onnx and onnxruntime (the `inference` extra); torch and lightning are
never imported. Features are rebuilt from the canonical store with the model's own feature spec;
scoring is three steps: inputs (`features.inputs`, under each model's normalisation statistics)
-> onnxruntime (`OnnxScorer.run`) -> ranks and holdings (`weekly_score`). A model whose spec
does not fit the data is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from rotation_dl.artifacts import atomic_write_bytes, atomic_write_parquet
from rotation_dl.backtest.selection import SelectionRule, rank_order, select
from rotation_dl.errors import DataError, ModelFileError, ScoringError
from rotation_dl.export.metadata import read_model
from rotation_dl.features.inputs import panel_inputs
from rotation_dl.features.normalize import NormStats
from rotation_dl.features.panel import Panel, build_panel
from rotation_dl.features.spec import FeatureSpec
from rotation_dl.machine import usable_cores
from rotation_dl.session import bar_size_text

log = logging.getLogger(__name__)


def providers(prefer: str = "auto") -> list[str]:
    """CUDA execution provider when available (and wanted), CPU otherwise."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if prefer in ("auto", "cuda") and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


STOCK_CHUNK = 1000  # at most this many stocks per onnxruntime call when runs are spread


class OnnxScorer:
    """One or several ONNX models (an ensemble averages their scores) sharing one input spec.

    A `stock` model on the CPU scores its stocks in near-equal chunks (at least one per core, at
    most STOCK_CHUNK stocks each), one single-threaded onnxruntime call per core at a time: a
    GRU gains little from onnxruntime's own threads (measured: 5,000 stocks 0.4 s with one
    thread or two, 0.2 s as chunks on two cores), and each stock's score depends on its own
    window only."""

    def __init__(self, paths: Sequence[str | Path], prefer: str = "auto") -> None:
        import onnxruntime as ort

        if not paths:
            raise ModelFileError("no ONNX model files given")
        self.paths = [Path(p) for p in paths]
        self.metas = []
        self.sessions = []
        chosen = providers(prefer)
        self.workers = usable_cores() if chosen == ["CPUExecutionProvider"] else 1
        for p in self.paths:
            model, meta = read_model(p)
            self.metas.append(meta)
            options = ort.SessionOptions()
            if meta.get("level") == "stock" and self.workers > 1:
                options.intra_op_num_threads = 1  # the chunks run in parallel instead
            try:
                session = ort.InferenceSession(
                    model.SerializeToString(), options, providers=chosen
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
                or m.get("level", "industry") != first.get("level", "industry")
                or m["net"].get("aggregate") != first["net"].get("aggregate")
            ):
                raise ModelFileError(
                    f"{p}: feature spec, window, industries, level or aggregation differ from "
                    f"{self.paths[0]}; an ensemble needs one input spec"
                )
        self.level: str = first.get("level", "industry")
        self.aggregate: str = first["net"].get("aggregate", "mean")
        self.stock_features = list(first.get("stock_features") or [])
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

    def inputs_per_model(self, inputs: Callable[[NormStats], np.ndarray]) -> list[np.ndarray]:
        """Each model's normalised input [B, N, W, P, F] float32 from `inputs(norm)` (built
        once per distinct set of statistics: the seeds of one fold share theirs)."""
        built: dict[NormStats, np.ndarray] = {}
        for norm in self.norms:
            if norm not in built:
                built[norm] = np.ascontiguousarray(inputs(norm), dtype=np.float32)
        return [built[norm] for norm in self.norms]

    def run(self, inputs: Callable[[NormStats], np.ndarray]) -> np.ndarray:
        """Mean score over the ensemble [B, N] (N industries, or stocks for a `stock` model) of
        the normalised inputs `inputs(norm)` gives under each model's statistics."""
        outs = []
        for sess, x in zip(self.sessions, self.inputs_per_model(inputs), strict=True):
            n = x.shape[1]
            n_parts = max(self.workers, -(-n // STOCK_CHUNK))  # at least one per core
            if self.level == "stock" and self.workers > 1 and n >= 2 * n_parts:
                from concurrent.futures import ThreadPoolExecutor

                cuts = np.linspace(0, n, n_parts + 1).astype(int)  # near-equal chunks
                parts = [x[:, a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
                with ThreadPoolExecutor(self.workers) as pool:  # onnxruntime frees the GIL
                    chunks = pool.map(
                        lambda part, sess=sess: sess.run(None, {"x": part})[0], parts
                    )
                    outs.append(np.concatenate(list(chunks), axis=1))
            else:
                outs.append(sess.run(None, {"x": x})[0])
        return np.mean(outs, axis=0)

    def run_pooled(
        self, inputs: Callable[[NormStats], np.ndarray], member: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """A `pooled` model: normalised stock inputs `inputs(norm)` [B, S, W, P, F] and member
        [B, S] (industry index into `industries`, -1 none) -> ensemble means of (stock [B, S],
        industry [B, N]) scores."""
        stock, ind = [], []
        feeds = {
            "member": np.ascontiguousarray(member, dtype=np.int64),
            "valid": (member >= 0).astype(np.float32),
        }
        for sess, x in zip(self.sessions, self.inputs_per_model(inputs), strict=True):
            s, n = sess.run(None, {"x": x, **feeds})
            stock.append(s)
            ind.append(n)
        return np.mean(stock, axis=0), np.mean(ind, axis=0)


def aggregate_stock_scores(
    scores: np.ndarray,
    member: np.ndarray,
    n_industries: int,
    how: str = "mean",
    weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stock scores [S] of one date -> (industry scores [N], constituent counts [N]); stocks
    with member -1 are left out. The numpy twin of `models.constituents.aggregate_scores`."""
    ok = member >= 0
    s, m = scores[ok].astype(np.float64), member[ok]
    counts = np.bincount(m, minlength=n_industries).astype(np.float64)
    if how == "median":
        out = np.zeros(n_industries)
        for k in np.unique(m):
            out[k] = np.median(s[m == k])
        return out, counts
    if how == "zmean" and len(s):
        s = (s - s.mean()) / max(s.std(), 1e-6)
    w = np.ones_like(s)
    if how == "amount_weighted":
        if weight is None:
            raise ValueError("amount_weighted aggregation needs the stocks' amounts")
        aw = np.clip(weight[ok].astype(np.float64), 0, None)
        total_aw = np.bincount(m, weights=aw, minlength=n_industries)
        w = np.where(total_aw[m] > 0, aw, 1.0)  # no amount in an industry: equal weights
    num = np.bincount(m, weights=w * s, minlength=n_industries)
    den = np.bincount(m, weights=w, minlength=n_industries)
    return num / np.maximum(den, 1e-12), counts


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


def scored_days(
    dates: Sequence[date],
    asof: date | None,
    warmup_days: int,
    history: int = 0,
    window: int = 1,
) -> tuple[date, date | None, list[int]]:
    """(asof, the week before's last day, indices of asof and, when it has the history, that
    day): asof defaults to the latest complete week's last day; ScoringError when asof is not
    a trading day or lacks `warmup_days` of history (`history`: trading days read before
    `dates[0]`, which count towards it; a `window` of days must lie within `dates`)."""
    asof = asof or latest_complete_week_end(dates)
    if asof not in dates:
        raise ScoringError(f"{asof} is not a trading day in the data ({dates[0]}..{dates[-1]})")
    idx = list(dates).index(asof)
    need = max(window - 1, warmup_days - 1 - history)  # index of the first scorable day
    if idx < need:
        raise ScoringError(
            f"{asof}: not enough history: needs {warmup_days} trading days up to it, "
            f"the data has {idx + 1 + history}"
        )
    prev = previous_week_end(dates, asof)
    before = list(dates).index(prev) if prev is not None else -1
    return asof, prev, [idx] + ([before] if before >= need else [])


@dataclass
class WeeklyScore:
    asof: date
    previous: date | None
    table: pl.DataFrame
    holdings: list[str]
    provider: str
    stocks: pl.DataFrame | None = None  # constituent models: the stock scores behind them
    missing: tuple[str, ...] = ()  # model industries without trading constituents in the data

    def warning(self) -> str | None:
        """One line naming the model's industries that had no data (None when there were none)."""
        if not self.missing:
            return None
        n = len(self.missing)
        return (
            f"{n} industr{'y' if n == 1 else 'ies'} of the model had no trading constituent in "
            f"the data and {'is' if n == 1 else 'are'} left unscored and unheld: "
            f"{', '.join(self.missing)}"
        )


def missing_industries_error(missing: Sequence[str], what: str) -> ScoringError:
    n = len(missing)
    return ScoringError(
        f"{n} industr{'y' if n == 1 else 'ies'} the model was trained on {what}: "
        f"{list(missing)[:5]} (score.on_missing_industry=warn scores the rest)"
    )


def with_absent_industries(panel: Panel, industries: Sequence[str]) -> Panel:
    """`panel` over `industries`: those without bars get undefined features and are inactive
    on every day (scored as absent, as an industry without a trading constituent that day)."""
    from dataclasses import replace

    absent = [i for i in industries if i not in panel.industries]
    if not absent:
        return panel
    d, n = len(panel.dates), len(absent)

    def widen(a: np.ndarray, fill: object) -> np.ndarray:
        pad = np.full((d, n, *a.shape[2:]), fill, dtype=a.dtype)
        return np.concatenate([np.asarray(a), pad], axis=1)

    return replace(
        panel,
        x=widen(panel.x, np.nan),
        label=widen(panel.label, np.nan),
        fwd_ret=widen(panel.fwd_ret, np.nan),
        active=widen(panel.active, False),
        industries=[*panel.industries, *absent],
    )


def industry_panel_for(
    industry_bars: pl.DataFrame,
    scorer: OnnxScorer,
    bar_minutes: int | None = None,
    on_missing_industry: str = "warn",
) -> tuple[Panel, list[str]]:
    """The industry panel of the model's industries under its own feature spec, and the model
    industries the bars lack (in the panel, inactive; `on_missing_industry="fail"` refuses
    them); refused (ScoringError) when the bars do not fit the model."""
    spec = scorer.spec
    if bar_minutes is not None and bar_minutes != spec.bar_minutes:
        raise ScoringError(
            f"model expects {bar_size_text(spec.bar_minutes)} bars, data has "
            f"{bar_size_text(bar_minutes)} bars"
        )
    have = set(industry_bars["industry"].unique().to_list())
    missing = [i for i in scorer.industries if i not in have]
    if missing and (on_missing_industry == "fail" or len(missing) == len(scorer.industries)):
        raise missing_industries_error(missing, "are missing from the data")
    panel = build_panel(industry_bars.filter(pl.col("industry").is_in(scorer.industries)), spec)
    if panel.bars_per_day != spec.bars_per_day:
        raise ScoringError("bars per day of the data differ from the model's feature spec")
    return with_absent_industries(panel, scorer.industries), missing


def by_industry(scores: np.ndarray, active: np.ndarray, industries: Sequence[str]) -> dict:
    """One date's scores [N] -> {industry: score, None where the industry was not active}."""
    return {ind: (float(scores[j]) if active[j] else None) for j, ind in enumerate(industries)}


def score_from_industry_bars(
    industry_bars: pl.DataFrame,
    scorer: OnnxScorer,
    *,
    asof: date | None = None,
    rule: SelectionRule | None = None,
    current_holdings: Sequence[str] | None = None,
    bar_minutes: int | None = None,
    on_missing_industry: str = "warn",
) -> WeeklyScore:
    """Industry bars -> scores for `asof` (default: the latest complete week's last day) and the
    week before, ranks, rank changes and holdings under the portfolio rule; model industries
    without bars are left unscored and unheld (`WeeklyScore.missing`)."""
    panel, missing = industry_panel_for(industry_bars, scorer, bar_minutes, on_missing_industry)
    return score_from_panel(panel, missing, scorer, asof=asof, rule=rule,
                            current_holdings=current_holdings)  # fmt: skip


def score_from_panel(
    panel: Panel,
    missing: Sequence[str],
    scorer: OnnxScorer,
    *,
    asof: date | None = None,
    rule: SelectionRule | None = None,
    current_holdings: Sequence[str] | None = None,
) -> WeeklyScore:
    """`score_from_industry_bars` on a panel `industry_panel_for` already built."""
    asof, prev, days = scored_days(panel.dates, asof, scorer.spec.warmup_days(scorer.window))
    order = [panel.industries.index(i) for i in scorer.industries]
    # inputs -> onnxruntime
    scores = scorer.run(lambda norm: panel_inputs(panel, days, scorer.window, norm, order).x)
    active = np.asarray(panel.active)[days][:, order]
    now, *before = (by_industry(scores[k], active[k], scorer.industries) for k in range(len(days)))
    return weekly_score(  # -> ranks and holdings
        now, before[0] if before else {}, scorer.industries, asof, prev,
        rule or SelectionRule(), current_holdings, scorer.provider, missing=missing,
    )  # fmt: skip


def score_from_stock_panel(
    sp,  # features.stock_panel.StockPanel over the model's industries
    scorer: OnnxScorer,
    *,
    asof: date | None = None,
    rule: SelectionRule | None = None,
    current_holdings: Sequence[str] | None = None,
    history: int = 0,
) -> WeeklyScore:
    """A constituent model: every active classified stock's window on `asof` (default: the
    latest complete week's last day) and the week before -> stock scores -> industry scores
    (aggregated as the model was trained, or pooled by the graph), ranks and holdings. The
    stock scores ride along in `WeeklyScore.stocks`. `history`: trading days the panel's
    build read before its first day (they count towards the warm-up)."""
    rule = rule or SelectionRule()
    present = set(np.unique(np.asarray(sp.member)[np.asarray(sp.member) >= 0]).tolist())
    missing = [ind for k, ind in enumerate(scorer.industries) if k not in present]
    if list(sp.industries) != scorer.industries:
        raise ScoringError("the stock panel's industries differ from the model's")
    if list(sp.features) != scorer.stock_features:
        raise ScoringError(
            f"the model reads stock features {scorer.stock_features}, the panel has "
            f"{list(sp.features)}"
        )
    warmup = scorer.spec.warmup_days(scorer.window)
    asof, prev, days = scored_days(sp.dates, asof, warmup, history, scorer.window)
    n = len(scorer.industries)
    active, member = np.asarray(sp.active), np.asarray(sp.member)
    amount = np.asarray(sp.amount)
    per_day, frames = [], []
    for d in days:
        stocks = np.nonzero(active[d] & (member[d] >= 0))[0]

        def inputs(norm: NormStats, d: int = d, stocks: np.ndarray = stocks) -> np.ndarray:
            return panel_inputs(sp, [d], scorer.window, norm, stocks).x  # [1, S', W, P, F]

        if scorer.level == "pooled":
            st, ind = scorer.run_pooled(inputs, member[d, stocks][None])
            stock_scores, ind_scores = st[0], ind[0]
            counts = np.bincount(member[d, stocks], minlength=n)
        else:
            stock_scores = scorer.run(inputs)[0]
            ind_scores, counts = aggregate_stock_scores(
                stock_scores, member[d, stocks], n, scorer.aggregate, amount[d, stocks]
            )
        per_day.append(
            {
                ind: (float(ind_scores[j]) if counts[j] > 0 else None)
                for j, ind in enumerate(scorer.industries)
            }
        )
        frames.append(
            pl.DataFrame(
                {
                    "symbol": np.asarray(sp.symbols)[stocks],
                    "industry": np.asarray(scorer.industries)[member[d, stocks]],
                    "score": stock_scores.astype(np.float64),
                }
            )
        )
    table = frames[0].with_columns(
        pl.col("score").rank("ordinal", descending=True).alias("rank"),
        pl.col("score").rank("ordinal", descending=True).over("industry").alias("industry_rank"),
    )
    if len(frames) > 1:
        before = frames[1].select("symbol", pl.col("score").alias("prev_score"))
        table = table.join(before, on="symbol", how="left").with_columns(
            (pl.col("score") - pl.col("prev_score")).alias("score_change")
        )
    else:
        table = table.with_columns(
            pl.lit(None, pl.Float64).alias("prev_score"),
            pl.lit(None, pl.Float64).alias("score_change"),
        )
    return weekly_score(
        per_day[0],
        per_day[1] if len(per_day) > 1 else {},
        scorer.industries,
        asof,
        prev,
        rule,
        current_holdings,
        scorer.provider,
        stocks=table.sort("rank"),
        missing=missing,
    )


def weekly_score(
    now: dict,
    before: dict,
    industries: Sequence[str],
    asof: date,
    prev: date | None,
    rule: SelectionRule,
    current_holdings: Sequence[str] | None,
    provider: str,
    stocks: pl.DataFrame | None = None,
    missing: Sequence[str] = (),
) -> WeeklyScore:
    """Industry scores of `asof` and the week before -> ranks, rank changes and holdings;
    `missing` industries (no data) are never held: one held before is sold."""
    held_before = (
        list(current_holdings)
        if current_holdings is not None
        else (select(before, [], rule) if before else [])
    )
    holdable = [h for h in held_before if h not in missing]
    holdings = [h for h in select(now, holdable, rule) if h not in missing]
    rank_now = {ind: r for r, ind in enumerate(rank_order(now), 1)}
    rank_prev = {ind: r for r, ind in enumerate(rank_order(before), 1)} if before else {}
    rows = []
    for ind in industries:
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
                "in_data": ind not in missing,
                "action": "no data"
                if ind in missing and not was
                else "buy"
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
    return WeeklyScore(asof, prev, table.sort("rank"), holdings, provider, stocks, tuple(missing))


def write_score(
    result: WeeklyScore,
    parquet: Path,
    csv: Path,
    json_path: Path,
    models: Sequence[Path],
    caveats: Sequence[str] = (),
) -> dict:
    """The score table as parquet and CSV and a JSON payload (holdings, provider, models),
    each written atomically; returns the payload."""
    if result.stocks is not None:  # constituent models: the stock scores first
        stem = parquet.name.removesuffix(".parquet")
        atomic_write_parquet(result.stocks, parquet.with_name(f"{stem}_stocks.parquet"))
        atomic_write_bytes(csv.with_name(f"{stem}_stocks.csv"), result.stocks.write_csv().encode())
    atomic_write_parquet(result.table, parquet)
    atomic_write_bytes(csv, result.table.write_csv().encode())
    payload = {
        "asof": str(result.asof),
        "previous": str(result.previous),
        "holdings": result.holdings,
        "provider": result.provider,
        "models": [str(m) for m in models],
        "missing_industries": list(result.missing),
        "warnings": [w for w in [result.warning()] if w],
        "data_caveats": list(caveats),
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
