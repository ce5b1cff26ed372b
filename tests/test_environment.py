"""The environment's failures and absurd values: one typed line, exit status 2, nothing
half-written, the previous good artifacts intact.

Root ignores file permissions (CI may run as root), so a full disk and a read-only folder are
injected as the OSErrors the kernel raises (ENOSPC, EROFS, EACCES) at the moment of writing.
"""

from __future__ import annotations

import errno
import os
import pickle

import polars as pl
import pytest
from conftest import SMALL_TRAIN, day_bars, write

from rotation_dl.cli import main
from rotation_dl.data.ingest import ingest_bars
from rotation_dl.errors import ValueRangeError
from rotation_dl.session import A_SHARE

SMALL = ["data.sample.n_industries=4", "data.sample.n_stocks=24", "data.sample.n_days=30"]


def _fail_writes(monkeypatch, err: int) -> None:
    """Every parquet write raises the OSError `err` (as a full or read-only disk would)."""

    def refuse(self, file, *a, **k):
        raise OSError(err, __import__("os").strerror(err), str(file))

    monkeypatch.setattr(pl.DataFrame, "write_parquet", refuse)


@pytest.mark.parametrize(
    "err, words",
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_industry_bars_on_a_failing_disk_keeps_the_previous_file(
    tmp_path, monkeypatch, capsys, err, words
):
    args = [f"paths.output_dir={tmp_path / 'o'}", *SMALL]
    assert main(["industry-bars", *args]) == 0
    target = tmp_path / "o" / "industry_bars.parquet"
    good = target.read_bytes()
    capsys.readouterr()
    _fail_writes(monkeypatch, err)
    assert main(["industry-bars", *args, "industry.weighting=amount"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "OutputError" in lines[0] and words in lines[0]
    assert "industry_bars.parquet" in lines[0]
    assert target.read_bytes() == good  # the good file is untouched
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp files


def test_ingest_on_a_full_disk_leaves_the_store_as_it_was(tmp_path, monkeypatch, capsys):
    from rotation_dl.data.store import store_rows, store_version

    store = tmp_path / "store"
    first = write(day_bars(("600000.SH", "600004.SH"), day="2025-03-03"), tmp_path / "a.parquet")
    ingest_bars(first, store, session=A_SHARE, calendar=None)
    rows = store_rows(store)
    more = write(day_bars(("600000.SH",), day="2025-03-04"), tmp_path / "raw" / "b.parquet")
    _fail_writes(monkeypatch, errno.ENOSPC)
    code = main(
        [
            "ingest",
            "data=parquet",
            f"data.bars={more}",
            "data.classification=unused.csv",
            f"paths.store={store}",
            "market.calendar=null",
        ]
    )
    assert code == 2 and "the disk is full" in capsys.readouterr().err
    assert store_version(store) == 1 and store_rows(store) == rows
    assert not list(store.glob(".staging-*"))


def test_a_checkpoint_the_safe_loader_refuses_is_one_line(tmp_path, capsys):
    class Evil:  # an arbitrary object: the weights-only loader must not unpickle it
        def __reduce__(self):
            return (print, ("executed",))

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"state_dict": Evil()}))
    code = main(["export", f"export.checkpoints=[{bad}]", f"paths.output_dir={tmp_path}"])
    out = capsys.readouterr()
    assert code == 2 and "executed" not in out.out
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "CheckpointError" in lines[0] and "bad.ckpt" in lines[0]


@pytest.mark.parametrize(
    "price, volume, words",
    [
        (1e12, 1000.0, "above ingest.policy.max_price"),  # finite, absurd
        (1000.0, 1e307, "beyond the float range"),  # price x volume overflows
    ],
)
def test_absurd_finite_values_are_refused(tmp_path, price, volume, words):
    bars = day_bars(("600000.SH", "600004.SH"), day="2025-03-03")
    first = pl.col("symbol") == "600000.SH"
    bars = bars.with_columns(
        *[pl.when(first).then(pl.lit(price)).otherwise(pl.col(c)).alias(c) for c in
          ("open", "high", "low", "close")],
        pl.when(first).then(pl.lit(volume)).otherwise(pl.col("volume")).alias("volume"),
        pl.when(first).then(pl.lit(min(price * volume, 1e300))).otherwise(pl.col("amount"))
        .alias("amount"),
    )  # fmt: skip
    with pytest.raises(ValueRangeError, match=words):
        ingest_bars(write(bars, tmp_path / "x.parquet"), tmp_path / "s", session=A_SHARE)
    assert not (tmp_path / "s").exists()


def test_train_that_fails_keeps_the_previous_factor_panel(tmp_path, capsys):
    """A failing re-run (too short a history for its folds) replaces nothing."""
    args = [f"paths.output_dir={tmp_path / 'o'}", f"paths.checkpoints={tmp_path / 'c'}"]
    assert main(["train", *args, *SMALL_TRAIN]) == 0
    panel = tmp_path / "o" / "factor_panel.parquet"
    good = panel.read_bytes()
    capsys.readouterr()
    assert main(["train", *args, *SMALL_TRAIN, "walkforward.min_train_days=500"]) == 2
    assert "walk-forward needs at least" in capsys.readouterr().err
    assert panel.read_bytes() == good


def test_environment_errors_name_the_target_not_a_temporary_name():
    import errno

    from rotation_dl.errors import environment_error

    tmp = "/runs/x/checkpoints/fold_00/seed_0/.last.ckpt.0123456789abcdef0123456789abcdef.tmp"
    full = environment_error(OSError(errno.ENOSPC, "No space left on device", tmp))
    assert str(full).startswith("/runs/x/checkpoints/fold_00/seed_0/last.ckpt: the disk is full")
    big = environment_error(OSError(errno.EFBIG, "File too large"))
    assert "paths.output_dir" in str(big) and "ulimit -f" in str(big)


def test_a_file_size_limit_during_ingest_is_one_line_and_the_store_is_untouched(tmp_path):
    """EFBIG (ulimit -f) while ingest writes: one line naming the limit, exit 2, and the
    store keeps its previous version."""
    import resource
    import subprocess
    import sys

    from conftest import day_bars, next_days, write

    raw = tmp_path / "raw"
    for d in next_days(2):
        bars = day_bars(tuple(f"60{k:04d}.SH" for k in range(400)), d)
        bars = bars.with_columns(pl.col("volume") + pl.int_range(pl.len()))  # less compressible
        write(bars.with_columns(amount=pl.col("volume") * pl.col("close")), raw / f"{d}.parquet")
    args = [
        sys.executable, "-m", "rotation_dl.cli", "ingest", "data=parquet", f"data.bars={raw}",
        f"paths.output_dir={tmp_path / 'o'}", "market.calendar=null",
    ]  # fmt: skip

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_384, 16_384))

    run = subprocess.run(args, capture_output=True, text=True, preexec_fn=small_files, timeout=300)
    errors = [line for line in run.stderr.splitlines() if ": error: " in line]
    assert run.returncode == 2 and len(errors) == 1, run.stderr[-2000:]
    assert "OutputError" in errors[0] and "ulimit -f" in errors[0]
    assert not list((tmp_path / "o" / "store").rglob("_delta_log/*.json"))
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]


def _unshare_ok() -> bool:
    import shutil
    import subprocess

    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_ok(), reason="needs root and unshare -m for a small tmpfs")
def test_a_full_disk_or_a_file_size_limit_during_ingest_train_and_export_is_one_line(tmp_path):
    """ENOSPC for real: each command writes to a small tmpfs mounted in a private mount
    namespace; each says in one line that the disk is full, naming a path under it, exit 2."""
    import shlex
    import subprocess
    import sys

    full = tmp_path / "full"
    full.mkdir()
    base = [f"paths.output_dir={tmp_path / 'o'}", f"paths.checkpoints={tmp_path / 'ck'}",
            *SMALL_TRAIN, "walkforward.max_folds=1"]  # fmt: skip
    cli = [sys.executable, "-m", "rotation_dl.cli"]
    for command in ("industry-bars", "train"):  # the run, on a disk with room
        done = subprocess.run([*cli, command, *base], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    cases = {  # (tmpfs size, arguments): each too small for what the command writes
        "ingest": ("64k", [*base, f"paths.store={full / 'store'}"]),
        "train": ("4k", [*base, f"paths.checkpoints={full / 'ck'}", "run=again"]),
        "export": ("4k", [*base, f"paths.onnx={full / 'onnx'}"]),
    }
    for command, (size, args) in cases.items():
        inner = " ".join(shlex.quote(a) for a in [*cli, command, *args])
        script = f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(full))} && {inner}"
        run = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                             text=True, timeout=600)  # fmt: skip
        errors = [line for line in run.stderr.splitlines() if ": error: " in line]
        assert run.returncode == 2 and len(errors) == 1, (command, run.stderr[-2000:])
        assert "the disk is full" in errors[0] and str(full) in errors[0], (command, errors)
    # EFBIG (ulimit -f) while train writes its checkpoints and export its ONNX files
    import resource

    def limit(size: int):
        return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    for command, size, args in [
        ("train", 16_384, [*base, f"paths.checkpoints={tmp_path / 'ck_limit'}", "run=limited"]),
        ("export", 2_048, [*base, f"paths.onnx={tmp_path / 'onnx_limit'}"]),
    ]:
        run = subprocess.run([*cli, command, *args], capture_output=True, text=True,
                             preexec_fn=limit(size), timeout=600)  # fmt: skip
        errors = [line for line in run.stderr.splitlines() if ": error: " in line]
        assert run.returncode == 2 and len(errors) == 1, (command, run.stderr[-2000:])
        assert "ulimit -f" in errors[0], (command, errors)
    assert not list((tmp_path / "onnx_limit").glob("*.onnx"))  # nothing half-written
