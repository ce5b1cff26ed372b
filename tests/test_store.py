"""The transactional store: one Delta commit per ingest, kills at every commit point, concurrent
writers, time travel, provenance and the old layout.

Fault injection: a child process runs an ingest with one step replaced by `kill -9` of itself;
afterwards the store must read as exactly the previous version (or the new one, when the kill
came after the commit), and the next ingest must finish the job and clean up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from conftest import REPO, day_bars, next_days, write

from rotation_dl.data.ingest import ingest_bars
from rotation_dl.data.store import (
    read_manifest,
    scan_store,
    store_rows,
    store_version,
    stored_partitions,
    upgrade_store,
)
from rotation_dl.errors import StoreError
from rotation_dl.session import A_SHARE

SYMBOLS_A = [f"60{k:04d}.SH" for k in range(6)]
SYMBOLS_B = [f"00{k:04d}.SZ" for k in range(1, 7)]


def weekdays(n: int, start: date = date(2025, 3, 3)) -> list[str]:
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d.isoformat())
        d += timedelta(days=1)
    return out


def bars_file(path: Path, days: list[str], symbols: list[str], price: float = 10.0) -> Path:
    """One file of full 15-minute days for `symbols`."""
    frames = [day_bars(tuple(symbols), day=d, price=price) for d in days]
    return write(pl.concat(frames), path)


def ingest(src: Path, store: Path, **kw):
    return ingest_bars(src, store, session=A_SHARE, calendar=None, **kw)


def rows_of(store: Path, version: int | None = None) -> pl.DataFrame:
    return scan_store(store, version=version).collect().sort("symbol", "ts")


# ---- one commit per ingest, time travel -------------------------------------------------------


def test_each_ingest_is_one_version_and_old_versions_stay_readable(tmp_path):
    store = tmp_path / "store"
    first = ingest(bars_file(tmp_path / "a.parquet", weekdays(4), SYMBOLS_A), store)
    assert first.store_version == 1 and store_version(store) == 1  # 0: the empty table
    second = ingest(bars_file(tmp_path / "b.parquet", weekdays(6), SYMBOLS_B), store)
    assert second.store_version == 2
    assert second.rows_added == 6 * 6 * 16
    assert store_rows(store, 1) == 4 * 6 * 16 and store_rows(store) == (4 + 6) * 6 * 16
    v1 = rows_of(store, 1)
    assert set(v1["symbol"]) == set(SYMBOLS_A) and v1.height == 4 * 6 * 16
    again = ingest(tmp_path / "b.parquet", store)  # unchanged file: nothing, no new version
    assert again.rows_added == 0 and store_version(store) == 2
    with pytest.raises(StoreError, match="no store version 7"):
        scan_store(store, version=7)


def test_time_travel_rebuilds_a_past_runs_industry_bars(tmp_path):
    """`data.store_version=1` rebuilds exactly the industry bars of version 1 after version 2
    added days, and every artifact records the version it came from."""
    from rotation_dl.artifacts import read_provenance
    from rotation_dl.config import compose_run
    from rotation_dl.stages import industry
    from rotation_dl.stages import ingest as ingest_stage

    raw = tmp_path / "raw"
    days = weekdays(8)
    bars_file(raw / "early.parquet", days[:5], SYMBOLS_A)
    cls = write(
        pl.DataFrame({"symbol": SYMBOLS_A, "industry": ["I1", "I1", "I2", "I2", "I3", "I3"]}),
        tmp_path / "cls.csv",
    )
    args = [
        "data=parquet",
        f"data.bars={raw}",
        f"data.classification={cls}",
        f"paths.output_dir={tmp_path / 'o'}",
        "market.calendar=null",
    ]
    ingest_stage.ingest(compose_run(args))
    v1 = industry.industry_bars(compose_run(args)).result.frame
    bars_file(raw / "late.parquet", days[5:], SYMBOLS_A, price=11.0)
    ingest_stage.ingest(compose_run(args))
    latest = industry.industry_bars(compose_run(args))
    assert latest.result.store_version == 2 and latest.result.frame["date"].n_unique() == 8
    past = industry.industry_bars(compose_run([*args, "data.store_version=1"]))
    assert past.result.store_version == 1
    assert past.result.frame.equals(v1)
    assert read_provenance(past.path)["store_version"] == 1


# ---- kills at every commit point --------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import rotation_dl.data.ingest as ing
    import rotation_dl.data.store as st
    from rotation_dl.session import A_SHARE

    point, src, store = sys.argv[1], sys.argv[2], Path(sys.argv[3])

    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "staged":            # every chunk validated and staged, nothing committed
        ing.commit_partitions = die
    elif point == "moving":          # some files already moved into the table, no log entry
        real, n = os.replace, [0]
        def replace(a, b):
            n[0] += 1
            if n[0] == 3:
                die()
            return real(a, b)
        st.os.replace = replace
    elif point == "before_log":      # every file in place, the log entry not yet written
        real_commit = st.commit_partitions
        ing.commit_partitions = lambda *a, **k: real_commit(*a, before_commit=die, **k)
    elif point == "after_log":       # committed; the sources record not yet updated
        ing.write_sources = die
    ing.ingest_bars(src, store, session=A_SHARE, calendar=None)
    """
)


def killed_ingest(point: str, src: Path, store: Path) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, point, str(src), str(store)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode


@pytest.mark.parametrize("point", ["staged", "moving", "before_log", "after_log"])
@pytest.mark.parametrize("incremental", [False, True], ids=["first", "incremental"])
def test_kill_at_each_commit_point_leaves_a_whole_version(tmp_path, point, incremental):
    store = tmp_path / "store"
    days = weekdays(8)
    old = bars_file(tmp_path / "old.parquet", days[:4], SYMBOLS_A)
    new = bars_file(tmp_path / "new.parquet", days[2:], SYMBOLS_A + SYMBOLS_B)
    before = 0
    if incremental:
        ingest(old, store)
        before = store_rows(store)
    rc = killed_ingest(point, new, store)
    assert rc == -9, "the child was meant to die by SIGKILL"
    union = pl.concat(
        [pl.read_parquet(old), pl.read_parquet(new)] if incremental else [pl.read_parquet(new)]
    ).unique(["symbol", "ts"])
    after = union.height if point == "after_log" else before
    assert store_rows(store) == after  # exactly one whole version, never a mix
    if after:
        got = rows_of(store)
        assert got.height == after and got.select("symbol", "ts").is_unique().all()
    assert list(store.glob(".staging-*")), "the killed ingest leaves its staging area"
    report = ingest(new, store)  # the next ingest finishes the job and cleans up
    assert not list(store.glob(".staging-*"))
    assert store_rows(store) == union.height
    assert rows_of(store).select("symbol", "ts").is_unique().all()
    assert report.rows_added == union.height - after
    # killed after its log entry: the commit's own record says which files it read, so the
    # next ingest reads nothing again
    assert report.skipped_files == (1 if point == "after_log" else 0)


# ---- concurrent writers -----------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from rotation_dl.data.ingest import ingest_bars
    from rotation_dl.session import A_SHARE
    r = ingest_bars(sys.argv[1], Path(sys.argv[2]), session=A_SHARE, calendar=None)
    print(r.rows_added)
    """
)


@pytest.mark.parametrize("overlap", [False, True], ids=["disjoint", "overlapping"])
def test_two_concurrent_ingests_lose_and_duplicate_nothing(tmp_path, overlap):
    """Two processes ingest into one store at once: the writer lock serialises their commits,
    the second merges onto the first's version; the store ends with the exact union."""
    days = weekdays(12)
    a = bars_file(tmp_path / "a.parquet", days, SYMBOLS_A)
    b_symbols = SYMBOLS_B + (SYMBOLS_A[:3] if overlap else [])
    b = bars_file(tmp_path / "b.parquet", days, b_symbols)
    for round_ in range(2):
        store = tmp_path / f"store{round_}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, str(src), str(store)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for src in (a, b)
        ]
        outs = [p.communicate(timeout=180) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
        union = pl.concat([pl.read_parquet(a), pl.read_parquet(b)]).unique(["symbol", "ts"])
        got = rows_of(store)
        assert got.height == union.height
        assert got.select("symbol", "ts").is_unique().all()
        assert sum(int(o[0].strip().splitlines()[-1]) for o in outs) == union.height
        assert store_version(store) == 2


def test_a_writer_that_cannot_get_the_lock_fails_clearly(tmp_path):
    import fcntl

    from rotation_dl.errors import StoreLockedError

    store = tmp_path / "store"
    ingest(bars_file(tmp_path / "a.parquet", weekdays(2), SYMBOLS_A), store)
    with open(store / "_writer.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(StoreLockedError, match="re-run when it has finished"):
            ingest(
                bars_file(tmp_path / "b.parquet", weekdays(2), SYMBOLS_B),
                store,
                lock_timeout_s=0.3,
            )
    assert store_version(store) == 1 and not list(store.glob(".staging-*"))


# ---- the old layout ---------------------------------------------------------------------------


def old_layout_store(root: Path) -> pl.DataFrame:
    """A store as rotation_dl wrote it before the Delta table."""
    frames = []
    for d in weekdays(3):
        part = root / "bars" / f"date={d}" / "data.parquet"
        frame = day_bars(tuple(SYMBOLS_A), day=d)
        write(frame, part)
        frames.append(frame)
    (root / "_manifest.json").write_text(
        json.dumps(
            {"frequency": "intraday", "bar_minutes": 15, "partition": "date", "schema_version": 1}
        )
    )
    return pl.concat(frames)


def test_old_layout_is_refused_and_converted_by_store_upgrade(tmp_path, capsys):
    from rotation_dl.cli import main

    store = tmp_path / "o" / "store"
    rows = old_layout_store(store)
    with pytest.raises(StoreError, match="rotation-dl store-upgrade"):
        read_manifest(store)
    assert main(["industry-bars", f"paths.output_dir={tmp_path / 'o'}"]) == 2
    assert "old layout" in capsys.readouterr().err
    assert upgrade_store(store) == rows.height
    assert read_manifest(store).schema_version == 2
    assert rows_of(store).equals(rows.sort("symbol", "ts"))
    assert stored_partitions(store) == [f"date={d}" for d in weekdays(3)]
    assert (store / "bars.pre-delta").is_dir() and not (store / "bars").exists()


def test_a_deleted_data_file_or_log_is_one_store_error_and_store_check_names_it(tmp_path):
    """A data file deleted from the table, or the whole _delta_log: readers and store-check
    give one StoreError naming the path, the cause and the fix, not a reader's traceback or
    "no stored bars between None and None"."""
    import shutil

    from rotation_dl.data.store import check_store, scan_store
    from rotation_dl.errors import StoreError

    raw = tmp_path / "raw"
    for d in next_days(3):
        write(day_bars(("600000.SH", "000001.SZ"), d), raw / f"{d}.parquet")
    store = tmp_path / "store"
    ingest_bars(raw, store, session=A_SHARE)
    ok = check_store(store)
    assert (ok["version"], ok["partitions"], ok["rows"]) == (1, 3, 96)
    victim = sorted((store / "table").glob("part=*/*.parquet"))[1]
    victim.unlink()
    for call in (lambda: scan_store(store).collect(), lambda: check_store(store)):
        with pytest.raises(StoreError) as err:
            call()
        msg = str(err.value)
        assert "1 data file(s) of store version 1 are missing" in msg and victim.name in msg
        assert "restore them from a backup" in msg and "\n" not in msg
    shutil.rmtree(store / "table" / "_delta_log")
    with pytest.raises(StoreError, match="_delta_log\\) is missing while 2 data file"):
        scan_store(store)


def test_a_killed_commits_orphans_are_removed_and_no_version_loses_a_file(tmp_path):
    """Files a killed commit moved into the table (no log entry lists them) are removed by the
    next ingest and by store-vacuum; every file of every version, replaced ones included, stays,
    so time travel still reads version 1."""
    import shutil

    from rotation_dl.data.store import check_store, referenced_files, vacuum_store

    raw = tmp_path / "raw"
    days = next_days(3)
    for d in days[:2]:
        write(day_bars(("600000.SH",), d), raw / f"{d}.parquet")
    store = tmp_path / "store"
    ingest_bars(raw, store, session=A_SHARE)
    write(day_bars(("000001.SZ",), days[1]), raw / "more.parquet")  # replaces a partition
    ingest_bars(raw, store, session=A_SHARE)
    base = store / "table"
    listed = referenced_files(store)
    assert len(listed) == 3  # two from version 1, the merged partition of version 2
    kept = sorted(base.glob("part=*/*.parquet"))
    orphan = base / f"part={days[0]}" / "0123456789abcdef0123456789abcdef.parquet"
    shutil.copy(kept[0], orphan)  # what a commit killed between its moves and its log entry
    (base / f"part={days[2]}").mkdir()
    shutil.copy(kept[0], base / f"part={days[2]}" / "fedcba9876543210fedcba9876543210.parquet")
    removed = vacuum_store(store)
    assert sorted(p.name for p in removed) == sorted(
        ["0123456789abcdef0123456789abcdef.parquet", "fedcba9876543210fedcba9876543210.parquet"]
    )
    assert sorted(base.glob("part=*/*.parquet")) == kept
    assert check_store(store, 1)["rows"] == 32 and check_store(store)["rows"] == 48
    shutil.copy(kept[0], orphan)
    write(day_bars(("600000.SH",), days[2]), raw / f"{days[2]}.parquet")
    ingest_bars(raw, store, session=A_SHARE)  # the next ingest sweeps it too
    assert not orphan.exists() and check_store(store)["rows"] == 64


def test_temporaries_of_dead_writers_are_swept_and_a_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    from rotation_dl.artifacts import atomic_write_bytes

    target = tmp_path / "industry_bars.parquet"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".industry_bars.parquet.{dead.pid}-{'a' * 32}.tmp"
    live = tmp_path / f".industry_bars.parquet.{os.getpid()}-{'b' * 32}.tmp"
    other = tmp_path / f".report.html.{dead.pid}-{'c' * 32}.tmp"  # another file's: not ours
    for f in (stale, live, other):
        f.write_bytes(b"half")
    atomic_write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole"
    assert not stale.exists() and live.exists() and other.exists()
