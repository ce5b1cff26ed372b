"""`cycle`: the weekly production cycle, one idempotent command a scheduler runs once a week.

    ingest -> industry bars (append the new days) -> retrain when due (the walk-forward's next
    fold, every seed) -> export -> register -> gate -> promote -> score the week with the live
    model -> append to the score history -> monitor -> weekly report

Each step is skipped when its result is there already (the registry says the fold was trained,
exported, gated, promoted; the history holds the week), so a killed cycle run again finishes
what the first began and a second run of a finished week changes nothing. `cycle.replay=
START..END` runs the same steps week by week over past data, each week seeing the store only up
to its own last day: production and research are one path (the replay's scores equal the
walk-forward's out-of-sample panel on those weeks).

Exit status: 0 done; 3 done with an alert (a refused gate, the live IC below its band, input
drift, missing data); 2 a user error (one line).
"""

from __future__ import annotations

import getpass
import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from rotation_dl.backtest.schedule import rebalance_dates
from rotation_dl.config import RunConfig
from rotation_dl.errors import ConfigError, RunLockedError, ScoringError, StoreError
from rotation_dl.layout import RunLayout
from rotation_dl.production import history, registry
from rotation_dl.production import monitor as mon
from rotation_dl.stages.common import layout_of

log = logging.getLogger(__name__)
KILL_ENV = "ROTATION_DL_CYCLE_KILL"  # fault injection (tests): SIGKILL before this step
LOCK = "cycle.lock"


def _step(name: str) -> None:
    """A kill point: the fault-injection tests end the process here, as kill -9 would."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def user() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass
class WeekResult:
    asof: date
    live_version: int | None
    retrained: bool
    alerts: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    no_new_data: bool = False

    def summary(self) -> str:
        live = f"v{self.live_version}" if self.live_version else "none"
        alerts = "; ".join(self.alerts) if self.alerts else "none"
        if self.no_new_data:
            return f"cycle {self.asof}: live model {live}, no new data, nothing published"
        return (
            f"cycle {self.asof}: live model {live}, "
            f"{'retrained' if self.retrained else 'not retrained'}, alerts: {alerts}"
        )


@dataclass
class CycleResult:
    weeks: list[WeekResult]
    replay: bool = False

    @property
    def exit_status(self) -> int:
        return 3 if any(w.alerts for w in self.weeks) else 0

    def describe(self) -> str:
        if self.replay:
            body = "\n".join(w.summary() for w in self.weeks)
            n_alerts = sum(bool(w.alerts) for w in self.weeks)
            return f"{body}\nreplay: {len(self.weeks)} week(s), {n_alerts} with an alert"
        w = self.weeks[-1]
        return "\n".join([*w.lines, w.summary()])


@contextmanager
def cycle_lock(layout: RunLayout) -> Iterator[None]:
    """One cycle at a time per run: a second is refused at once (a scheduler retries later)."""
    from rotation_dl.artifacts import folder_lock

    def refuse(holder: str) -> RunLockedError:
        return RunLockedError(
            f"{layout.production}: another cycle ({holder}) is running for this run; wait for it "
            "to finish (it holds the registry, the score history and the monitor)"
        )

    with folder_lock(layout.production, LOCK, 0.0, refuse):
        yield


def cycle(cfg: RunConfig, progress: Callable[[str], None] | None = None) -> CycleResult:
    """The weekly cycle for `cycle.asof` (default: the latest complete week), or its replay
    week by week over `cycle.replay`."""
    if cfg.model.level != "industry":
        raise ConfigError(
            f"cycle: model.level={cfg.model.level} is not supported yet; the weekly cycle runs "
            "industry-level models (model=flat or model=hierarchical)"
        )
    say = progress or log.info
    layout = layout_of(cfg)
    with cycle_lock(layout):
        if cfg.cycle.replay is None:
            asof = date.fromisoformat(cfg.cycle.asof) if cfg.cycle.asof else None
            return CycleResult([run_week(cfg, layout, asof, replay=False, say=say)])
        weeks = replay_weeks(cfg, *cfg.cycle.replay_span())
        say(f"replay: {len(weeks)} week(s), {weeks[0]} .. {weeks[-1]}")
        results = []
        for k, asof in enumerate(weeks, 1):
            say(f"--- week {k}/{len(weeks)}: {asof}")
            results.append(run_week(cfg, layout, asof, replay=True, say=say))
        return CycleResult(results, replay=True)


def replay_weeks(cfg: RunConfig, start: date, end: date) -> list[date]:
    """The last trading day of each complete week in [start, end] with stored bars."""
    from rotation_dl.stages.ingest import existing_store
    from rotation_dl.stages.score import scan_trading_days

    store = existing_store(cfg, "cycle")
    days = scan_trading_days(store, start, end + timedelta(days=7), cfg.data.store_version)
    ends = rebalance_dates(days, "weekly")
    complete = [d for d in ends if start <= d <= end and (d.weekday() == 4 or d < days[-1])]
    if not complete:
        raise ConfigError(f"cycle.replay={cfg.cycle.replay}: no complete week with stored bars")
    return complete


def run_week(
    cfg: RunConfig, layout: RunLayout, wanted: date | None, *, replay: bool, say
) -> WeekResult:
    """Every step of one week's cycle, each skipped when already done."""
    from rotation_dl.stages.ingest import existing_store
    from rotation_dl.stages.score import store_last_date

    c = cfg.cycle
    lines: list[str] = []

    def note(text: str) -> None:
        lines.append(text)
        say(text)

    _step("ingest")
    new_rows = None
    if c.ingest and not replay:
        from rotation_dl.stages.ingest import ingest

        rep = ingest(cfg).report
        new_rows = rep.rows_added
        note(f"[1/8] ingest: {rep.summary().splitlines()[0]}")
    else:
        note(
            "[1/8] ingest: skipped ("
            + ("replay: the store as it is" if replay else "cycle.ingest=false")
            + ")"
        )
    store = existing_store(cfg, "cycle")
    last = store_last_date(store, cfg.data.store_version)
    if wanted is not None and wanted > last:
        raise StoreError(
            f"{store}: the store ends {last}, before the week asked for ({wanted}); run "
            "`rotation-dl ingest` with its bars, or the cycle with cycle.ingest=true"
        )
    end = wanted or last

    _step("bars")
    upd = update_bars(cfg, layout, store, end)
    note(f"[2/8] {upd.describe()}")
    dates = bar_dates(layout)
    from rotation_dl.export.scoring import latest_complete_week_end

    asof = wanted or latest_complete_week_end(dates)
    if asof not in dates:
        raise ScoringError(f"cycle.asof={asof} is not a trading day in the data")
    quiet = not replay and not c.republish and new_rows == 0 and upd.mode == "current"
    if quiet and week_is_finished(layout, asof):
        raised = standing_alerts(layout, asof)
        note(
            f"no new data: week {asof} is published, monitored and reported already; nothing "
            "appended"
            + (
                f" (its {len(raised)} alert(s) were raised when it ran: see the monitor)"
                if raised
                else ""
            )
        )
        live = registry.live(layout.registry)
        return WeekResult(
            asof, live.version if live else None, False, lines=lines, no_new_data=True
        )

    retrained, gate_alert = retrain_when_due(cfg, layout, dates, asof, note)
    alerts = [gate_alert] if gate_alert else []

    live = registry.live(layout.registry)
    if live is None:
        alerts.append("no live model: nothing published (see the gate above)")
        note("[5/8] score: no live model")
        return WeekResult(asof, None, retrained, alerts, lines)
    _step("score")
    ws, psi_values = score_week(cfg, layout, live, asof, dates)
    note(
        f"[5/8] score: {asof} with model v{live.version} ({len(live.models)} ONNX model(s)); "
        f"holdings: {', '.join(ws.holdings)}"
    )
    _step("publish")
    pub = history.publish(
        layout.score_history,
        asof,
        live.version,
        ws.table,
        by=user(),
        at=registry.now_text(),
        republish=c.republish,
    )
    note(f"[6/8] {pub.describe()}")
    _step("monitor")
    pinned = replay or c.asof is not None
    row = update_monitor(cfg, layout, live, asof, ws, psi_values, pinned, dates, alerts)
    alerts = row["alerts"]  # the gate's, then the monitor's: all kept in the week's row
    note(f"[7/8] monitor: {monitor_text(row)}")
    _step("report")
    path = write_report(cfg, layout, asof, ws, row)
    note(f"[8/8] report: {path}")
    return WeekResult(asof, live.version, retrained, alerts, lines)


# ---- bars ---------------------------------------------------------------------------------
def update_bars(cfg: RunConfig, layout: RunLayout, store: Path, end: date):
    from rotation_dl.data.store import resolve_version, store_provenance
    from rotation_dl.industry.incremental import update_industry_bars
    from rotation_dl.stages.industry import build_for

    def build(start, stop, carry):
        return build_for(
            cfg, None, bar_minutes=cfg.industry.bar_minutes, start=start, end=stop, carry=carry
        )

    version = resolve_version(store, cfg.data.store_version)
    return update_industry_bars(
        layout.production_bars, end, build, store_provenance(store, version)
    )


def bars_of(layout: RunLayout) -> pl.LazyFrame:
    """The cycle's industry bars (the parts its state names)."""
    from rotation_dl.industry.incremental import scan_bars

    return scan_bars(layout.production_bars)


def bar_dates(layout: RunLayout) -> list[date]:
    return sorted(bars_of(layout).select(pl.col("date").unique()).collect()["date"])


def week_is_finished(layout: RunLayout, asof: date) -> bool:
    """The week is in the history (by the model live now), the monitor and the report:
    nothing left to do."""
    pub = history.published(layout.score_history).filter(pl.col("asof") == asof)
    live = registry.live(layout.registry)
    if pub.is_empty() or live is None or pub["model_version"][0] != live.version:
        return False
    if not layout.monitor.exists():
        return False
    rows = pl.read_parquet(layout.monitor).filter(pl.col("asof") == asof)
    return not rows.is_empty() and layout.cycle_report(asof).exists()


def standing_alerts(layout: RunLayout, asof: date) -> list[str]:
    """The alerts the finished week raised (a repeated run exits as the first did)."""
    rows = pl.read_parquet(layout.monitor).filter(pl.col("asof") == asof)
    text = rows["alerts"][0] if not rows.is_empty() else ""
    return [a for a in (text or "").split(" | ") if a]


# ---- retrain, export, gate, promote --------------------------------------------------------
def cycle_walkforward(cfg: RunConfig):
    """The run's schedule (`retrain_every`) without a fold cap (a cap would move every fold
    as the history grows)."""
    return replace(cfg.walkforward, fold_cap=None, max_folds=None)


def production_plan(cfg: RunConfig, layout: RunLayout):
    """The walk-forward plan and panel on the cycle's bars (written as one file for it)."""
    from rotation_dl.industry.incremental import consolidate
    from rotation_dl.stages.train import plan_walk_forward

    bars = consolidate(layout.production_bars, layout.production_train_bars)
    return plan_walk_forward(
        bars,
        replace(layout, panel_cache=layout.production_panel_cache),
        cfg.features,
        cycle_walkforward(cfg),
        cfg.trading_session(),
        cfg.data.series,
    )


def due_fold(cfg: RunConfig, layout: RunLayout, dates: list[date], asof: date):
    """The walk-forward fold whose test block holds `asof` (None before the first), from the
    calendar alone: no panel is built on a week without a retrain."""
    from rotation_dl.industry.build import infer_bar_minutes
    from rotation_dl.stages.train import folds_for
    from rotation_dl.training.walkforward import first_test_day

    recent = bars_of(layout).filter(pl.col("date") >= dates[max(0, len(dates) - 3)])
    spec = cfg.features.spec(
        infer_bar_minutes(recent), cfg.trading_session(), series=cfg.data.series
    )
    wf = cycle_walkforward(cfg)
    warmup = spec.warmup_days(cfg.features.window)
    first = first_test_day(warmup, wf.min_train_days, wf.val_days, wf.gap)
    if first >= len(dates):  # the history is too short for a first model yet
        return None, f"trading day {first + 1}; the bars have {len(dates)}"
    folds = folds_for(len(dates), warmup, wf)
    idx = dates.index(asof)
    due = [f for f in folds if f.test[0] <= idx]
    return (due[-1] if due else None), str(dates[folds[0].test[0]])


def retrain_when_due(cfg: RunConfig, layout: RunLayout, dates, asof: date, note):
    """Train, export, register, gate and promote the walk-forward fold due at `asof` (its test
    block holds asof) unless the registry has it. Returns (retrained, alert or None)."""
    reg = layout.registry
    _step("retrain")
    fold, first = due_fold(cfg, layout, dates, asof)
    if fold is None:
        note(f"[3/8] retrain: no fold is due yet (the first model scores from {first})")
        return False, None
    live = registry.live(reg)
    if live is not None and live.fold > fold.index:  # its training reaches past this week
        raise ConfigError(
            f"cycle: week {asof} comes before live model v{live.version}'s first week "
            f"({live.detail.get('test_start')}): scoring it would use later data. A cycle "
            "goes forward from its production state; replay earlier weeks into a fresh "
            "paths.output_dir"
        )
    plan = None
    entry = registry.for_fold(reg, fold.index)
    retrained = False
    if entry is None and (live is None or live.fold < fold.index):
        if not cfg.cycle.retrain:
            note(
                f"[3/8] retrain: fold {fold.index} is due; cycle.retrain=false keeps v"
                f"{live.version if live else '-'}"
            )
            return False, None
        plan = production_plan(cfg, layout)
        check_fold(plan, fold)
        entry = train_and_register(cfg, layout, plan, fold, asof, note)
        retrained = True
    elif entry is None:  # the live model is this fold's already (registered by hand?)
        note(f"[3/8] retrain: not due (live v{live.version} is fold {live.fold})")
        return False, None
    else:
        note(f"[3/8] retrain: fold {fold.index} is model v{entry.version} ({entry.status})")
    fresh = entry.gate is None
    if fresh:
        _step("gate")
        plan = plan or production_plan(cfg, layout)
        result = run_gate(cfg, layout, plan, fold, entry, live)
        registry.record_gate(reg, entry.version, result, user(), str(asof))
        entry = registry.for_fold(reg, fold.index)
    assert entry is not None and entry.gate is not None
    g = entry.gate
    if fresh or not g["passed"]:
        verdict = "passed" if g["passed"] else "refused"
        note(f"[4/8] gate v{entry.version}: {verdict} ({g['reason']})")
    else:
        note(f"[4/8] gate: v{entry.version} passed its gate earlier")
    if not g["passed"]:
        keep = f"v{live.version} keeps scoring" if live else "there is no live model"
        return retrained, f"gate refused v{entry.version}: {g['reason']}; {keep}"
    if entry.status == "candidate":
        _step("promote")
        registry.promote(reg, entry.version, user(), str(asof))
        note(
            f"      promoted v{entry.version} to live"
            + (f" (v{live.version} retired)" if live else "")
        )
    return retrained, None


def check_fold(plan, fold) -> None:
    """The panel's own plan agrees with the calendar's (the same days, so the same fold)."""
    same = [f for f in plan.folds if f.index == fold.index]
    if not same or same[0] != fold:
        raise ConfigError(
            f"cycle: fold {fold.index} of the calendar differs from the panel's plan; "
            "the walkforward settings changed since the registry's models were trained?"
        )


def train_and_register(cfg: RunConfig, layout: RunLayout, plan, fold, asof: date, note):
    """Every seed of `fold` (a killed run resumes from its checkpoints), exported to ONNX,
    registered as a candidate with its provenance and the training window's feature bins."""
    from rotation_dl.export.metadata import HMAC_KEY, read_model
    from rotation_dl.export.onnx_export import export_onnx
    from rotation_dl.models.config import GRUConfig
    from rotation_dl.provenance import code_version
    from rotation_dl.stages.train import sigterm_stops_training, use_cpu_threads
    from rotation_dl.training.loop import train_fold

    panel, d = plan.panel, plan.panel.dates
    use_cpu_threads(cfg)
    net = GRUConfig(**{**cfg.model.to_dict(), "n_features": panel.n_features})
    store_version = panel.extra.get("provenance", {}).get("store_version")
    meta = {
        "data_hash": panel.source_hash,
        "store_version": store_version,
        "run": cfg.run,
        "code_version": code_version(),
    }
    results = []
    with sigterm_stops_training():
        for seed in cfg.seeds:
            res = train_fold(
                panel,
                fold,
                net,
                cfg.trainer,
                cfg.features.window,
                seed,
                layout.production_fold(fold.index, seed),
                False,
                True,
                meta,
            )
            results.append(res)
    note(
        f"[3/8] retrain: fold {fold.index} trained on {d[fold.train[0]]}..{d[fold.train[1] - 1]}"
        f" ({len(cfg.seeds)} seed(s)); validation {d[fold.val[0]]}..{d[fold.val[1] - 1]}"
    )
    _step("export")
    version = registry.next_version(layout.registry)
    out = layout.production_models(version)
    models, digests, signed = [], {}, []
    for seed in cfg.seeds:
        ckpt = layout.production_fold(fold.index, seed).best
        path, _ = export_onnx(
            ckpt, out / f"fold_{fold.index:02d}_seed_{seed}.onnx", opset=cfg.export.opset
        )
        model, _ = read_model(path)
        props = {m.key: m.value for m in model.metadata_props}
        digests[path.name] = props.get("rotation_dl.digest", "")
        signed.append(HMAC_KEY in props)
        models.append(str(path))
    vals = [r.best_val_rank_ic for r in results if np.isfinite(r.best_val_rank_ic)]
    train_cells = training_cells(panel, fold)
    detail = {
        "fold": fold.index,
        "train_start": str(d[fold.train[0]]),
        "train_end": str(d[fold.train[1] - 1]),
        "val_start": str(d[fold.val[0]]),
        "val_end": str(d[fold.val[1] - 1]),
        "test_start": str(d[fold.test[0]]),
        "seeds": list(cfg.seeds),
        "store_version": store_version,
        "code_version": code_version(),
        "data_hash": panel.source_hash,
        "models": models,
        "digests": digests,
        "signed": all(signed),
        "val_rank_ic": float(np.mean(vals)) if vals else None,
        "val_rank_ic_per_seed": [r.best_val_rank_ic for r in results],
        "checkpoints": [str(layout.production_fold(fold.index, s).best) for s in cfg.seeds],
        "feature_bins": mon.feature_bins(train_cells, list(panel.spec.features)),
    }
    _step("register")
    entry = registry.register(layout.registry, version, detail, user(), str(asof))
    note(f"      exported and registered v{version}: {len(models)} model(s) in {out}")
    return entry


def training_cells(panel, fold) -> np.ndarray:
    """Every active (day, industry, bar) cell of the fold's training days [cells, features]."""
    a, b = fold.train
    x = np.asarray(panel.x[a:b])  # [D, N, P, F]
    active = np.asarray(panel.active[a:b])
    return x[active].reshape(-1, x.shape[-1])


def run_gate(cfg: RunConfig, layout: RunLayout, plan, fold, entry, live) -> dict:
    """ONNX/torch parity, integrity and signature, the validation IC, and (with a live model)
    the shadow comparison on the candidate's validation weeks: held out of the candidate's
    training (used only to stop it early) and after the live model's training, so neither
    trained on them."""
    from rotation_dl.errors import ModelFileError
    from rotation_dl.export.scoring import OnnxScorer

    g = cfg.cycle.gate
    panel = plan.panel
    labelled = np.where(panel.label_mask().any(axis=1))[0]
    val_days = [i for i in range(*fold.val) if i in set(labelled.tolist())]
    ends = set(rebalance_dates([panel.dates[i] for i in val_days], "weekly") if val_days else [])
    shadow = [i for i in val_days if panel.dates[i] in ends][-g.shadow_weeks :]
    out: dict = {"shadow_days": [str(panel.dates[i]) for i in shadow]}
    try:
        cand = OnnxScorer(entry.models, prefer="cpu")  # digests, and the signature with a key
    except ModelFileError as exc:
        return {**out, "passed": False, "reason": f"integrity: {exc}"}
    out["parity"] = parity(entry, cand, panel, shadow or val_days[-4:])
    if not out["parity"] <= g.max_parity:
        return {
            **out,
            "passed": False,
            "reason": f"ONNX/torch parity {out['parity']:.2e} > {g.max_parity:g}",
        }
    val_ic = entry.detail.get("val_rank_ic")
    if val_ic is None or val_ic < g.min_val_ic:
        return {
            **out,
            "passed": False,
            "reason": "validation rank IC "
            + ("n/a" if val_ic is None else f"{val_ic:+.4f}")
            + f" < cycle.gate.min_val_ic={g.min_val_ic:g}",
        }
    reason = f"parity {out['parity']:.1e}, validation rank IC {val_ic:+.4f}"
    if live is not None and shadow:
        live_scorer = OnnxScorer(live.models, prefer="cpu")
        if live_scorer.industries != cand.industries:
            out["shadow"] = "skipped: the live model scores other industries"
        else:
            ic_c = shadow_ic(cand, panel, shadow)
            ic_l = shadow_ic(live_scorer, panel, shadow)
            out.update(shadow_ic_candidate=ic_c, shadow_ic_live=ic_l)
            reason += f"; shadow IC {ic_c:+.4f} vs live v{live.version} {ic_l:+.4f}"
            if ic_c < ic_l - g.shadow_margin:
                return {
                    **out,
                    "passed": False,
                    "reason": f"shadow IC {ic_c:+.4f} trails live v{live.version}'s "
                    f"{ic_l:+.4f} by more than {g.shadow_margin:g} on "
                    f"{len(shadow)} week(s)",
                }
    return {**out, "passed": True, "reason": reason}


def parity(entry, scorer, panel, days: list[int]) -> float:
    """Max |ONNX - torch| score of each seed's model on the same normalised inputs."""
    import torch

    from rotation_dl.export.onnx_export import load_checkpoint
    from rotation_dl.features.inputs import panel_inputs

    worst = 0.0
    for ckpt, sess, norm in zip(
        entry.detail["checkpoints"], scorer.sessions, scorer.norms, strict=True
    ):
        x = panel_inputs(panel, days, scorer.window, norm).x.astype(np.float32)
        net, _ = load_checkpoint(ckpt)
        net.eval()
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"x": x})[0]
        worst = max(worst, float(np.nanmax(np.abs(ref - got))))
    return worst


def shadow_ic(scorer, panel, days: list[int]) -> float:
    """The ensemble's mean rank IC on `days` of the panel against the training label, the
    measure the export probe reports (`mean_rank_ic`)."""
    from rotation_dl.export.onnx_export import mean_rank_ic
    from rotation_dl.features.inputs import panel_inputs

    scores = scorer.run(lambda norm: panel_inputs(panel, days, scorer.window, norm).x)
    labels = np.where(panel.label_mask()[days], np.asarray(panel.label)[days], np.nan)
    return mean_rank_ic(scores, labels)


# ---- score, monitor, report ----------------------------------------------------------------
def score_week(cfg: RunConfig, layout: RunLayout, live, asof: date, dates):
    """The live ensemble's scores of `asof` from the cycle's bars (the week before's published
    holdings carried), written as `score` writes them; and this week's raw input cells for
    the drift check."""
    from rotation_dl.export.scoring import (
        OnnxScorer,
        industry_panel_for,
        score_from_panel,
        write_score,
    )
    from rotation_dl.industry.build import infer_bar_minutes

    scorer = OnnxScorer(live.models, prefer=cfg.score.providers)
    idx = dates.index(asof)
    start = dates[max(0, idx - cfg.score.lookback_days)]
    frame = (
        bars_of(layout)
        .filter(pl.col("date").is_between(start, asof))
        .collect()
        .sort("industry", "ts")
    )
    before = history.published(layout.score_history).filter(pl.col("asof") < asof)
    held = None
    if not before.is_empty():
        prev = before.filter(pl.col("asof") == before["asof"].max())
        held = prev.filter(pl.col("held"))["industry"].to_list()
    panel, missing = industry_panel_for(
        frame, scorer, infer_bar_minutes(frame), cfg.score.on_missing_industry
    )
    ws = score_from_panel(
        panel,
        missing,
        scorer,
        asof=asof,
        rule=cfg.portfolio.rule(len(scorer.industries)),
        current_holdings=held,
    )
    write_score(
        ws,
        layout.score_file(asof),
        layout.score_file(asof, ".csv"),
        layout.score_file(asof, ".json"),
        scorer.paths,
    )
    week = [i for i, d in enumerate(panel.dates) if asof - timedelta(days=asof.weekday()) <= d]
    x = np.asarray(panel.x)[week]
    cells = x[np.asarray(panel.active)[week]].reshape(-1, x.shape[-1])
    return ws, dict(zip(scorer.spec.features, cells.T, strict=True))


MONITOR_SCHEMA = {
    "asof": pl.Date,
    "model_version": pl.Int64,
    "rank_ic": pl.Float64,
    "topk_excess": pl.Float64,
    "topk_excess_net": pl.Float64,
    "turnover": pl.Float64,
    "live_weeks": pl.Int64,
    "live_mean_ic": pl.Float64,
    "live_nw_t": pl.Float64,
    "live_note": pl.String,
    "window_mean_ic": pl.Float64,
    "band_p5": pl.Float64,
    "ic_alert": pl.Boolean,
    "psi_max": pl.Float64,
    "psi_feature": pl.String,
    "drift_alert": pl.Boolean,
    "missing_industries": pl.String,
    "active_share": pl.Float64,
    "store_last": pl.Date,
    "store_lag_days": pl.Int64,
    "health_alert": pl.Boolean,
    "alerts": pl.String,
}


def update_monitor(
    cfg,
    layout: RunLayout,
    live,
    asof: date,
    ws,
    psi_values,
    pinned,
    dates: list[date],
    earlier_alerts: list[str],
) -> dict:
    """This week's monitor row (and every published week's matured outcome) -> monitor.parquet
    and psi.parquet, each rewritten whole and atomically; returns this week's row."""
    from rotation_dl.artifacts import atomic_write_parquet

    m = cfg.cycle.monitor
    h = cfg.features.horizon
    pub = history.published(layout.score_history).filter(pl.col("asof") <= asof)
    old = (
        pl.read_parquet(layout.monitor)
        if layout.monitor.exists()
        else pl.DataFrame(schema=MONITOR_SCHEMA)
    )
    final = old.filter(pl.col("rank_ic").is_not_null())
    pending = sorted(set(pub["asof"].to_list()) - set(final["asof"].to_list()))
    labels = pl.DataFrame(schema={"date": pl.Date, "industry": pl.String, "fwd_ret": pl.Float64})
    if pending:
        labels = mon.matured_labels(
            bars_of(layout).filter(pl.col("date").is_between(pending[0], asof)),
            h,
        )
    outcomes = mon.weekly_outcomes(pub, labels, cfg.market.costs.model())
    outcomes = pl.concat(
        [
            final.select(outcomes.columns),
            outcomes.filter(~pl.col("asof").is_in(final["asof"].implode())),
        ]
    ).sort("asof")
    band, no_band = oos_band(layout, cfg, m.weeks, dates)
    live_stats = mon.live_summary(outcomes.filter(pl.col("asof") <= asof), h, band, m.min_windows)
    bins = live.detail.get("feature_bins", {})
    psis = {f: mon.psi(bins[f], v) for f, v in psi_values.items() if f in bins}
    worst = max(psis, key=lambda f: -np.inf if np.isnan(psis[f]) else psis[f]) if psis else None
    bars = bars_of(layout).filter(pl.col("date") >= asof - timedelta(days=45))  # 20+ days
    missing = sorted(set(ws.missing) | set(mon.missing_on(bars, asof)))
    share = mon.active_share(bars, asof)
    lag = store_lag(cfg, dates[-1], asof, pinned)
    alerts = list(earlier_alerts)
    if live_stats["ic_alert"]:
        alerts.append(
            f"live IC over the last {m.weeks} weeks {live_stats['window_mean_ic']:+.4f} is below "
            f"the walk-forward band's 5th percentile {live_stats['band_p5']:+.4f}"
        )
    drifted = {f: v for f, v in psis.items() if v >= m.psi_alert}
    if drifted:
        alerts.append(
            "input drift: PSI "
            + ", ".join(f"{f} {v:.2f}" for f, v in drifted.items())
            + f" >= {m.psi_alert:g}"
        )
    health = []
    if missing:
        health.append(f"industries without a trading constituent: {', '.join(missing[:5])}")
    if np.isfinite(share) and share < m.min_active_share:
        health.append(f"constituents trading {share:.0%} of the 20-day median")
    if lag > m.max_store_lag_days:
        health.append(f"the store lags the calendar by {lag} trading day(s)")
    alerts += [f"data health: {x}" for x in health]
    row = {
        "asof": asof,
        "model_version": live.version,
        **{
            k: live_stats[k]
            for k in (
                "live_weeks",
                "live_mean_ic",
                "live_nw_t",
                "live_note",
                "window_mean_ic",
                "band_p5",
                "ic_alert",
            )
        },
        "psi_max": psis[worst] if worst else None,
        "psi_feature": worst,
        "drift_alert": bool(drifted),
        "missing_industries": ", ".join(missing),
        "active_share": share,
        "store_last": dates[-1],
        "store_lag_days": lag,
        "health_alert": bool(health),
        "alerts": " | ".join(alerts),
    }
    weekly = old.filter(pl.col("asof") != asof).drop(
        "rank_ic", "topk_excess", "topk_excess_net", "turnover"
    )
    this = pl.DataFrame([row], schema={k: v for k, v in MONITOR_SCHEMA.items() if k in row})
    table = (
        pl.concat([weekly, this.select(weekly.columns)])
        .join(outcomes, on="asof", how="left")
        .select(list(MONITOR_SCHEMA))
        .sort("asof")
    )
    atomic_write_parquet(table, layout.monitor)
    psi_rows = pl.DataFrame(
        {"asof": [asof] * len(psis), "feature": list(psis), "psi": list(psis.values())},
        schema={"asof": pl.Date, "feature": pl.String, "psi": pl.Float64},
    )
    old_psi = pl.read_parquet(layout.monitor_psi) if layout.monitor_psi.exists() else psi_rows[:0]
    atomic_write_parquet(
        pl.concat([old_psi.filter(pl.col("asof") != asof), psi_rows]).sort("asof", "feature"),
        layout.monitor_psi,
    )
    return {
        **row,
        "alerts": alerts,
        "band": band,
        "no_band": no_band,
        "psi": psis,
        "outcomes": outcomes,
    }


def store_lag(cfg: RunConfig, last: date, asof: date, pinned: bool) -> int:
    """Trading days between the cycle's last bar and the reference day: `asof` for a replay or
    a week asked for by date, else the day before today in the market's time zone."""
    from rotation_dl.data.calendar import non_trading_days, today_in

    ref = asof if pinned else today_in(cfg.market.timezone) - timedelta(days=1)
    if ref <= last:
        return 0
    days = [last + timedelta(days=k) for k in range(1, (ref - last).days + 1)]
    closed = non_trading_days(days, cfg.market.calendar, cfg.market.timezone, today=ref)
    return sum(d not in closed for d in days)


def oos_band(layout: RunLayout, cfg: RunConfig, weeks: int, dates: list[date]):
    """The W-week band of the run's walk-forward OOS weekly rank IC: `rotation-dl train`'s
    factor panel at week ends against the cycle's bars' labels, the weeks whose label has
    matured by the last bar. Each week's IC is computed once and kept (monitor/
    oos_weekly_ic.json), so a week's cost does not grow with the history. (None, why) when
    there is no band."""
    import json

    from rotation_dl.artifacts import atomic_write_bytes
    from rotation_dl.backtest.ic import ic_series
    from rotation_dl.features.panel import file_hash

    if not layout.factor_panel.exists():
        return None, "no walk-forward factor panel (run `rotation-dl train` for the band)"
    h = cfg.features.horizon
    cache = layout.monitor_dir / "oos_weekly_ic.json"
    key = f"{file_hash(layout.factor_panel)}:{h}"
    saved = json.loads(cache.read_text()) if cache.exists() else {}
    ics: dict[str, float | None] = saved.get("ic", {}) if saved.get("key") == key else {}
    matured = set(dates[: max(0, len(dates) - h)])
    fp = pl.read_parquet(layout.factor_panel, columns=["date", "industry", "score"])
    ends = [d for d in rebalance_dates(fp["date"], "weekly") if d in matured]
    todo = [d for d in ends if str(d) not in ics]
    if todo:
        labels = mon.matured_labels(bars_of(layout).filter(pl.col("date") >= todo[0]), h)
        got = ic_series(fp.filter(pl.col("date").is_in(todo)), labels, return_col="fwd_ret")
        found = dict(zip(map(str, got["date"]), got["rank_ic"], strict=True))
        ics.update({str(d): found.get(str(d)) for d in todo})
        atomic_write_bytes(cache, json.dumps({"key": key, "ic": ics}).encode())
    values = [ics[str(d)] for d in ends]
    band = mon.oos_band(values, weeks)
    why = None if band else f"{len(values)} walk-forward OOS week(s) matured: too few for a band"
    return band, why


def monitor_text(row: dict) -> str:
    def f(v, fmt="+.4f"):
        return (
            "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)
        )

    band = row["band"]
    parts = [
        f"live IC {f(row['live_mean_ic'])} over {row['live_weeks']} matured week(s) "
        f"(Newey-West t {f(row['live_nw_t'], '.2f')})",
        f"last {band.weeks}: {f(row['window_mean_ic'])} vs band p5 {f(band.p5)}"
        if band
        else f"no OOS band: {row['no_band']}",
        f"max PSI {f(row['psi_max'], '.3f')} ({row['psi_feature']})",
        f"active {f(row['active_share'], '.0%')}",
        f"alerts: {len(row['alerts'])}",
    ]
    return "; ".join(parts)


def write_report(cfg: RunConfig, layout: RunLayout, asof: date, ws, row: dict) -> Path:
    from rotation_dl.report.cycle import build_cycle_report

    path = layout.cycle_report(asof)
    monitor = pl.read_parquet(layout.monitor)
    psi = pl.read_parquet(layout.monitor_psi).filter(pl.col("asof") == asof)
    return build_cycle_report(
        asof=asof,
        scores=ws.table,
        holdings=ws.holdings,
        monitor=monitor,
        psi=psi,
        band=row["band"].to_dict() if row["band"] else None,
        registry=registry.table(layout.registry),
        alerts=row["alerts"],
        psi_alert=cfg.cycle.monitor.psi_alert,
        path=path,
    )
