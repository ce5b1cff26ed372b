"""Runs of rows in a frame whose rows come grouped by symbol, in time order within each symbol
(validated chunks, store scans): where each symbol and each (symbol, day) starts. The numpy
fast paths of validation, ingest and the industry build share them."""

from __future__ import annotations

import numpy as np
import polars as pl

US_PER_MIN = 60_000_000
US_PER_DAY = 86_400_000_000


def symbol_starts(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(a bool per row: the symbol differs from the row before's, the stamps in microseconds)."""
    keys = frame.select(
        (pl.col("symbol") != pl.col("symbol").shift(1)).fill_null(True).alias("new"),
        pl.col("ts").dt.cast_time_unit("us").to_physical().alias("t"),
    )
    return keys["new"].to_numpy(), keys["t"].to_numpy()


def day_starts(new_symbol: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A bool per row: a new (symbol, day) run starts here."""
    day = t // US_PER_DAY
    out = new_symbol.copy()
    out[0] = True
    out[1:] |= day[1:] != day[:-1]
    return out
