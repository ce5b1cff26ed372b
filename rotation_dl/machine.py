"""What this machine offers a run: the cores this process may use, and how many CPU threads
each of several processes on it should take."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """CPU cores this process may use (its affinity mask, where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def cpu_threads(requested: int | None, processes: int = 1) -> tuple[int, str]:
    """(threads, why): `requested` when set, else the usable cores shared by the `processes`
    that train on this machine at once (sweep workers, DDP ranks on the CPU), at least 1:
    threads beyond the cores fight each other (measured: a fold in 72 s with torch's two
    threads on a loaded 2-core machine, 40 s with one)."""
    cores = usable_cores()
    if requested is not None:
        return requested, f"trainer.cpu_threads={requested} ({cores} usable cores)"
    n = max(1, cores // max(1, processes))
    return n, f"{cores} usable core(s) / {processes} training process(es) on this machine"
