"""The weekly production cycle: replay = walk-forward, twice = once, a kill at every step, the
gate, rollback and republish, alerts' exit 3, one cycle at a time, incremental = full bars."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import REPO, SMALL_TRAIN

from rotation_dl.backtest.costs import CostModel
from rotation_dl.cli import main
from rotation_dl.config import compose_run
from rotation_dl.errors import PublishedWeekError
from rotation_dl.industry.incremental import read_state, scan_bars, update_industry_bars
from rotation_dl.layout import RunLayout
from rotation_dl.production import history, registry
from rotation_dl.production import monitor as mon
from rotation_dl.stages.industry import build_for

RUN = [
    *(o for o in SMALL_TRAIN if not o.startswith("data.sample.n_days")),
    "data.sample.n_days=140",
    "walkforward.fold_cap=null",
    "portfolio.k=2",
    "cycle.gate.min_val_ic=-1",  # a 1-epoch GRU on 5 industries: any validation IC passes
    "cycle.gate.shadow_margin=2",  # (the shadow comparison is tested on its own below)
]
FIRST, SPLIT, LAST = "2024-04-08", "2024-06-28", "2024-07-26"  # 16 weeks; fold 3 from 07-01
KILL_WEEK = "2024-07-05"  # a week with a retrain: every step runs


def args(out: Path, *extra: str) -> list[str]:
    return [*RUN, f"paths.output_dir={out}", f"paths.checkpoints={out / 'ck'}", *extra]


def layout(out: Path) -> RunLayout:
    return RunLayout.from_paths(compose_run(args(out)).paths)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The research walk-forward, then the cycle replayed over the first 13 of 16 weeks."""
    out = tmp_path_factory.mktemp("cycle") / "run"
    assert main(["train", *args(out)]) == 0
    assert main(["cycle", *args(out, f"cycle.replay={FIRST}..{SPLIT}")]) in (0, 3)
    return out


@pytest.fixture(scope="module")
def week_done(base, tmp_path_factory) -> Path:
    """The base with the retrain week run to the end: the uninterrupted reference."""
    out = tmp_path_factory.mktemp("week") / "run"
    shutil.copytree(base, out)
    assert main(["cycle", *args(out, f"cycle.asof={KILL_WEEK}")]) in (0, 3)
    return out


def copy_of(base: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(base, out)
    return out


def state_of(out: Path) -> dict:
    """Registry, history and monitor as they stand (timestamps left out)."""
    lay = layout(out)
    reg = registry.table(lay.registry).drop("promoted_at")
    hist = history.read(lay.score_history).drop("published_at").sort("asof", "revision", "rank")
    return {
        "registry": reg,
        "history": hist,
        "monitor": pl.read_parquet(lay.monitor),
        "psi": pl.read_parquet(lay.monitor_psi),
    }


def assert_same_state(a: dict, b: dict) -> None:
    for key in a:
        assert a[key].equals(b[key]), key


# ---- production and research are one path -----------------------------------------------------
def test_replay_equals_the_walk_forward_oos_panel(base, tmp_path):
    out = copy_of(base, tmp_path)
    assert main(["cycle", *args(out, f"cycle.replay=2024-07-01..{LAST}")]) in (0, 3)
    lay = layout(out)
    pub = history.published(lay.score_history)
    weeks = sorted(pub["asof"].unique())
    assert len(weeks) == 16 and str(weeks[0]) == "2024-04-12" and str(weeks[-1]) == LAST
    fp = pl.read_parquet(lay.factor_panel).rename({"date": "asof", "score": "oos"})
    both = pub.join(fp, on=["asof", "industry"], how="left")
    assert both["oos"].null_count() == 0
    assert (both["score"] - both["oos"]).abs().max() < 1e-6
    # each week scored by the model of the walk-forward's own fold for that week
    reg = {e.version: e.fold for e in registry.entries(lay.registry)}
    assert (both["model_version"].replace_strict(reg) == both["fold"]).all()
    assert sorted(reg.values()) == [0, 1, 2, 3]
    versions = {e.detail["store_version"] for e in registry.entries(lay.registry)}
    assert versions == {1}  # the store version the bars were built from reaches the registry
    assert [e.status for e in registry.entries(lay.registry)] == ["retired"] * 3 + ["live"]
    # the cycle's bars, appended week by week, equal one build of the same days
    full = build_for(compose_run(args(out)), None, end=date.fromisoformat(LAST)).frame
    inc = scan_bars(lay.production_bars).collect().sort("industry", "ts")
    assert inc.select("industry", "ts").equals(full.select("industry", "ts"))
    for c in ("open", "high", "low", "close", "ret", "volume", "amount"):
        assert np.allclose(inc[c], full[c], rtol=0, atol=1e-12), c
    assert (lay.monitor_dir / "oos_weekly_ic.json").exists()
    monitor = pl.read_parquet(lay.monitor)
    assert monitor["asof"].to_list() == weeks and monitor["band_p5"].drop_nulls().len() > 0
    assert monitor["rank_ic"].drop_nulls().len() == 15  # the last week's label is not known yet
    page = lay.cycle_report(weeks[-1]).read_text()
    assert 'id="live-ic"' in page and 'id="psi"' in page and "Model registry" in page


@pytest.mark.parametrize("first", [25, 61, 97])
def test_incremental_industry_bars_equal_a_full_rebuild(base, tmp_path, first):
    cfg = compose_run(args(base))
    full = build_for(cfg, None).frame
    days = sorted(full["date"].unique())
    folder = tmp_path / "bars"

    def build(start, end, carry):
        return build_for(cfg, None, start=start, end=end, carry=carry)

    assert update_industry_bars(folder, days[first], build).mode == "rebuilt"
    for end in [*days[first + 1 :: 5], days[-1]]:
        assert update_industry_bars(folder, end, build).mode == "appended"
    assert len(read_state(folder).parts) > 3
    inc = scan_bars(folder).collect().sort("industry", "ts")
    assert inc.select("industry", "ts", "n_active").equals(
        full.select("industry", "ts", "n_active")
    )
    for c in ("open", "high", "low", "close", "ret", "ret_ew", "volume", "vwap_gap"):
        assert np.nanmax(np.abs(inc[c].to_numpy() - full[c].to_numpy())) <= 1e-12, c
    # a part a killed update wrote but never named is not read, and the next update removes it
    stray = folder / "part-20990101-20990102.parquet"
    full.head(3).write_parquet(stray)
    assert scan_bars(folder).collect().height == full.height
    assert update_industry_bars(folder, days[-1], build).mode == "current"
    assert not stray.exists()
    # going back (a replay) rebuilds up to the day asked for
    assert update_industry_bars(folder, days[40], build).mode == "rebuilt"
    assert scan_bars(folder).collect()["date"].max() == days[40]


# ---- idempotence, faults, locks ---------------------------------------------------------------
def test_a_second_run_of_a_finished_week_changes_nothing(week_done, tmp_path, capsys):
    out = copy_of(week_done, tmp_path)
    lay = layout(out)
    before = state_of(out)
    versions = (history.tables.version(lay.score_history), history.tables.version(lay.registry))
    score_bytes = lay.score_file(date.fromisoformat(KILL_WEEK)).read_bytes()
    capsys.readouterr()
    assert main(["cycle", *args(out, f"cycle.asof={KILL_WEEK}")]) == 0  # no new data: exit 0
    text = capsys.readouterr().out
    assert f"cycle {KILL_WEEK}: live model v4, no new data, nothing published" in text
    assert_same_state(before, state_of(out))
    assert versions == (
        history.tables.version(lay.score_history),
        history.tables.version(lay.registry),
    )
    assert lay.score_file(date.fromisoformat(KILL_WEEK)).read_bytes() == score_bytes


STEPS = [
    "ingest",
    "bars",
    "retrain",
    "export",
    "register",
    "gate",
    "promote",
    "score",
    "publish",
    "monitor",
    "report",
]


# The cycle runs once per step in a fork of one process that has imported what it needs
# (torch, Lightning, polars: imported only, nothing run, so no thread pool is forked): each
# child kills itself with SIGKILL at its step, as kill -9 would; a last child runs to the end.
FORKER = """
import json, os, sys
import lightning, torch  # noqa: F401  (imported once, shared by the children)
from rotation_dl.cli import main
args, steps = json.loads(sys.argv[1]), json.loads(sys.argv[2])
codes = []
for step in [*steps, None]:
    pid = os.fork()
    if pid == 0:
        if step:
            os.environ["ROTATION_DL_CYCLE_KILL"] = step
        sys.stdout = open(os.devnull, "w")
        os._exit(main(args))
    _, status = os.waitpid(pid, 0)
    codes.append(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
print(json.dumps(codes))
"""


def test_kill_at_every_step_then_rerun_ends_as_an_uninterrupted_cycle(base, week_done, tmp_path):
    out = copy_of(base, tmp_path)
    cycle_args = ["cycle", *args(out, f"cycle.asof={KILL_WEEK}")]
    proc = subprocess.run(
        [sys.executable, "-c", FORKER, json.dumps(cycle_args), json.dumps(STEPS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "ROTATION_DL_CYCLE_KILL"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    codes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert codes[:-1] == [-9] * len(STEPS), (codes, proc.stderr[-3000:])  # killed at each step
    assert codes[-1] in (0, 3), proc.stderr[-3000:]
    assert_same_state(state_of(week_done), state_of(out))
    a, b = layout(week_done), layout(out)
    week = date.fromisoformat(KILL_WEEK)
    assert a.score_file(week).read_bytes() == b.score_file(week).read_bytes()
    assert b.cycle_report(week).exists()
    assert not list(b.production.rglob("*.tmp")) and not list(b.production.rglob(".*.raw"))


def test_two_cycles_at_once_the_second_is_refused_in_one_line(base, tmp_path, capsys):
    from rotation_dl.stages.cycle import cycle_lock

    out = copy_of(base, tmp_path)
    with cycle_lock(layout(out)):
        assert main(["cycle", *args(out, f"cycle.asof={KILL_WEEK}")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RunLockedError" in err[0] and "another cycle" in err[0]


# ---- the gate, the registry, the history --------------------------------------------------------
def test_a_failed_gate_alerts_with_exit_3_and_the_live_model_keeps_scoring(base, tmp_path, capsys):
    out = copy_of(base, tmp_path)
    capsys.readouterr()
    rc = main(["cycle", *args(out, f"cycle.asof={KILL_WEEK}", "cycle.gate.min_val_ic=0.99")])
    assert rc == 3
    text = capsys.readouterr().out
    assert "gate refused v4: validation rank IC" in text and "v3 keeps scoring" in text
    lay = layout(out)
    e = {x.version: x for x in registry.entries(lay.registry)}
    assert e[4].status == "candidate" and e[4].gate_passed is False and e[3].status == "live"
    week = history.published(lay.score_history).filter(pl.col("asof") == date(2024, 7, 5))
    assert week["model_version"].unique().to_list() == [3]
    assert main(["models", "promote", "4", *args(out)]) == 2
    assert "its gate failed" in capsys.readouterr().err


def test_rollback_then_a_published_week_needs_republish(week_done, tmp_path, capsys):
    out = copy_of(week_done, tmp_path)
    capsys.readouterr()
    assert main(["models", "rollback", *args(out)]) == 0
    assert "model v3 (fold 2) is live" in capsys.readouterr().out
    lay = layout(out)
    assert registry.live(lay.registry).version == 3
    # the week v4 published would now come out differently: refused, then a new revision
    assert main(["cycle", *args(out, f"cycle.asof={KILL_WEEK}")]) == 2
    assert "PublishedWeekError" in capsys.readouterr().err
    rc = main(["cycle", *args(out, f"cycle.asof={KILL_WEEK}", "cycle.republish=true")])
    assert rc in (0, 3)
    rows = history.read(lay.score_history).filter(pl.col("asof") == date(2024, 7, 5))
    got = rows.group_by("revision").agg(pl.col("model_version").first()).sort("revision")
    assert got.rows() == [(0, 4), (1, 3)]  # revision 0 is still there, untouched
    assert main(["models", "list", *args(out)]) == 0
    listing = capsys.readouterr().out
    assert "   3 live" in listing and "   4 retired" in listing


def test_history_appends_once_and_revisions_never_overwrite(tmp_path):
    path = tmp_path / "h"
    week = pl.DataFrame(
        {
            "industry": ["A", "B", "C"],
            "score": [0.3, -0.1, 0.2],
            "rank": [1, 3, 2],
            "held": [True, False, True],
            "action": ["buy", "", "buy"],
        }
    )
    d = date(2025, 1, 3)
    kw = {"by": "me", "at": "t"}
    assert history.publish(path, d, 1, week, **kw).outcome == "published"
    v = history.tables.version(path)
    assert history.publish(path, d, 1, week, **kw).outcome == "unchanged"
    assert history.tables.version(path) == v
    other = week.with_columns(pl.col("score") + 1e-12)  # any change at all is a change
    with pytest.raises(PublishedWeekError, match="republish"):
        history.publish(path, d, 1, other, **kw)
    assert history.publish(path, d, 1, other, republish=True, **kw).revision == 1
    assert history.read(path).height == 6
    assert history.published(path)["score"].to_list() == other.sort("rank")["score"].to_list()


def test_registry_promotion_retires_in_one_commit_and_rollback_goes_back(tmp_path):
    path = tmp_path / "r"
    for v in (1, 2, 3):
        registry.register(
            path, v, {"fold": v, "models": [], "train_start": "a", "train_end": "b"}, "me", "w"
        )
        registry.record_gate(path, v, {"passed": v != 3, "reason": "r"}, "me", "w")
    registry.promote(path, 1, "me", "w")
    registry.promote(path, 2, "me", "w")
    with pytest.raises(Exception, match="gate failed"):
        registry.promote(path, 3, "me", "w")
    assert [e.status for e in registry.entries(path)] == ["retired", "live", "candidate"]
    assert registry.rollback(path, "me", "w").version == 1
    with pytest.raises(Exception, match="nothing to roll back to"):
        registry.rollback(path, "me", "w")  # 2 was rolled back; 1 is the only one left
    ev = registry.events(path)
    assert ev["seq"].to_list() == list(range(ev.height))


# ---- the monitor's definitions ------------------------------------------------------------------
def test_psi_band_and_weekly_outcomes_by_hand():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((20_000, 2))
    bins = mon.feature_bins(ref, ["a", "b"])
    assert mon.psi(bins["a"], rng.standard_normal(5_000)) < 0.01
    shifted = mon.psi(bins["a"], rng.standard_normal(5_000) + 1.0)
    assert shifted > 0.25
    # the definition: sum (a - e) ln(a / e) over the decile bins
    x = rng.standard_normal(5_000) + 1.0
    counts = np.bincount(np.searchsorted(bins["a"]["edges"], x, side="right"), minlength=10)
    a, e = counts / x.size, np.asarray(bins["a"]["share"])
    assert abs(mon.psi(bins["a"], x) - float(np.sum((a - e) * np.log(a / e)))) < 1e-12
    band = mon.oos_band([0.1, 0.0, 0.2, 0.1, 0.3], 2)
    means = np.array([0.05, 0.1, 0.15, 0.2])
    assert band.windows == 4 and abs(band.p5 - np.quantile(means, 0.05)) < 1e-12
    assert mon.oos_band([0.1, 0.2], 2) is None
    pub = pl.DataFrame(
        {
            "asof": [date(2025, 1, 3)] * 3 + [date(2025, 1, 10)] * 3,
            "industry": ["A", "B", "C"] * 2,
            "score": [3.0, 2.0, 1.0, 1.0, 2.0, 3.0],
            "held": [True, False, False, False, False, True],
        }
    )
    labels = pl.DataFrame(
        {
            "date": [date(2025, 1, 3)] * 3 + [date(2025, 1, 10)] * 3,
            "industry": ["A", "B", "C"] * 2,
            "fwd_ret": [0.03, 0.0, -0.03, 0.01, 0.02, 0.0],
        }
    )
    costs = CostModel(commission_bps=10.0)
    out = mon.weekly_outcomes(pub, labels, costs)
    assert out["rank_ic"].to_list() == pytest.approx([1.0, -0.5])
    assert out["topk_excess"].to_list() == pytest.approx([0.03, -0.01])
    # week 1 buys the book (1 unit, 10 bps); week 2 sells A and buys C (2 units, 20 bps)
    assert out["topk_excess_net"].to_list() == pytest.approx([0.03 - 0.001, -0.01 - 0.002])
    s = mon.live_summary(out, 5, None)
    assert s["live_weeks"] == 2 and "too few" in s["live_note"]
    narrow = mon.Band(weeks=2, p5=0.5, p50=0.6, p95=0.7, windows=4)  # the live mean 0.25 < p5
    s = mon.live_summary(out, 5, narrow, min_windows=10)
    assert s["window_mean_ic"] == pytest.approx(0.25) and not s["ic_alert"]
    assert "band of 4 window(s): too few to alert" in s["live_note"]
    assert mon.live_summary(out, 5, narrow, min_windows=4)["ic_alert"]


def test_cycle_config_refuses_a_bad_replay_span(capsys):
    assert main(["cycle", "cycle.replay=2024-05-01"]) == 2
    assert "START..END" in capsys.readouterr().err
    with pytest.raises(Exception, match="END is before START"):
        compose_run(["cycle.replay=2024-05-01..2024-04-01"])


def test_json_of_the_gate_names_its_shadow_weeks(base):
    lay = layout(base)
    gates = [e.gate for e in registry.entries(lay.registry) if e.gate]
    assert all(g["passed"] and g["parity"] <= 1e-5 for g in gates)
    later = [g for g in gates if "shadow_ic_live" in g]
    assert later and all(len(g["shadow_days"]) >= 1 for g in later)
    json.dumps(gates)  # plain JSON in the registry


def test_a_week_before_the_live_models_first_week_is_refused(base, tmp_path, capsys):
    out = copy_of(base, tmp_path)
    assert main(["cycle", *args(out, "cycle.asof=2024-04-19")]) == 2
    assert "scoring it would use later data" in capsys.readouterr().err


def test_a_week_before_any_model_can_exist_alerts_and_publishes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["cycle", *args(out, "cycle.asof=2024-03-01")]) == 3
    text = capsys.readouterr().out
    assert "no fold is due yet (the first model scores from trading day" in text
    assert "alerts: no live model: nothing published" in text
    assert history.read(layout(out).score_history).is_empty()
