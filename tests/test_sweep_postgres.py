"""Sweeps as a team runs them: Optuna workers on a PostgreSQL server, one killed with kill -9
mid-trial. The study ends complete, the killed trial FAIL and re-run with its parameters and
seed, no trial counted twice. The server is started by the test (tests/postgres_server.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import REPO
from postgres_server import postgres_server, why_unavailable

from rotation_dl.models import search

pytestmark = pytest.mark.skipif(why_unavailable() is not None, reason=str(why_unavailable()))

N_TRIALS = 6
SPACE = {"trainer.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}

# One sweep worker on its own "host" (a hostname of its own: the test is two machines, so a dead
# worker is found by its stale heartbeat only). A trial writes a marker naming its process and
# trial, then sleeps; its objective is a function of its parameters and seed.
WORKER = """
import json, os, sys, time
from pathlib import Path
from rotation_dl.models import search
a = json.loads(sys.argv[1])
search.socket.gethostname = lambda: a["host"]
study = search.open_study(a["study"], a["url"], "maximize", 0, 2, 100, 100,
                          heartbeat_s=1, grace_s=3, retries=1)
def run_trial(overrides, callbacks):
    d = dict(o.split("=", 1) for o in overrides)
    trial = d["run"].rsplit("_", 1)[-1]
    (Path(a["dir"]) / f"{a['host']}_{os.getpid()}_{trial}").write_text(json.dumps(overrides))
    time.sleep(a["trial_s"])
    return -abs(float(d["trainer.lr"]) - 0.003) - 1e-6 * int(d["seeds"].strip("[]"))
search.run_study(study, a["space"], run_trial, a["n_trials"], seed=100, poll_s=0.3)
"""


def _worker(script: Path, url: str, host: str, markers: Path) -> subprocess.Popen:
    args = {"url": url, "study": "team", "host": host, "dir": str(markers), "trial_s": 1.5,
            "space": SPACE, "n_trials": N_TRIALS}  # fmt: skip
    return subprocess.Popen([sys.executable, str(script), json.dumps(args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield url


def test_two_workers_one_killed_mid_trial_study_completes_without_double_counting(
    pg_url, tmp_path
):
    script, markers = tmp_path / "worker.py", tmp_path / "markers"
    script.write_text(WORKER)
    markers.mkdir()
    a = _worker(script, pg_url, "host-a", markers)
    b = _worker(script, pg_url, "host-b", markers)
    deadline = time.monotonic() + 120
    while not list(markers.glob(f"host-b_{b.pid}_*")):  # b is inside its first trial
        assert b.poll() is None and time.monotonic() < deadline, b.stderr.read()[-2000:]
        time.sleep(0.05)
    os.kill(b.pid, signal.SIGKILL)
    b.wait()
    killed = int(next(markers.glob(f"host-b_{b.pid}_*")).name.rsplit("_", 1)[-1])
    _, err = a.communicate(timeout=180)
    assert a.returncode == 0, err[-3000:]

    study = optuna.load_study(study_name="team", storage=pg_url)
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert optuna.trial.TrialState.RUNNING not in states
    assert optuna.trial.TrialState.WAITING not in states
    by_number = {t.number: t for t in trials}
    # the killed attempt is FAIL, and exactly one later trial re-ran it with its params and seed
    assert by_number[killed].state == optuna.trial.TrialState.FAIL
    reruns = [t for t in trials if t.user_attrs.get("rerun_of") == killed]
    assert len(reruns) == 1 and reruns[0].state == optuna.trial.TrialState.COMPLETE
    assert reruns[0].params == by_number[killed].params
    assert reruns[0].user_attrs["seed"] == by_number[killed].user_attrs["seed"] == 100 + killed
    # n_trials counts trials, not attempts: six finished, one extra failed attempt, no duplicate
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == N_TRIALS and len(trials) == N_TRIALS + 1
    assert len({t.user_attrs["seed"] for t in complete}) == N_TRIALS
    assert search.progress(trials) == (N_TRIALS, 0, 0)
    assert sorted(by_number) == list(range(N_TRIALS + 1))
    # the survivor took the re-run; running the worker again finds the study complete
    assert any(m.name.startswith("host-a_") and m.name.endswith(f"_{reruns[0].number:03d}")
               for m in markers.iterdir())  # fmt: skip
    again = _worker(script, pg_url, "host-c", markers)
    _, err = again.communicate(timeout=60)
    assert again.returncode == 0, err[-2000:]
    assert len(optuna.load_study(study_name="team", storage=pg_url).trials) == N_TRIALS + 1


def test_storage_errors_are_one_line_config_errors(pg_url):
    from rotation_dl.errors import ConfigError

    dead = "postgresql+psycopg2://postgres:secret@127.0.0.1:9/postgres"  # nothing listens on 9
    with pytest.raises(ConfigError, match=r"cannot connect") as err:
        search.open_study("x", dead, "maximize", 0, 1, 1, 1)
    assert "secret" not in str(err.value) and ":***@" in str(err.value)


@pytest.mark.slow
def test_cli_sweep_with_two_local_workers_on_postgres(pg_url, tmp_path):
    """The command a team runs: `train -m` with the study on the server, two workers."""
    from test_sweep import _sweep

    proc = _sweep(tmp_path, [f"hparams_search.storage={pg_url}", "launcher=local",
                             "launcher.workers=2", "run=team"], 3)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "storage: postgresql+psycopg2://postgres@127.0.0.1" in proc.stdout
    trials = optuna.load_study(study_name="team_gru_optuna", storage=pg_url).trials
    assert search.progress(trials) == (3, 0, 0)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
