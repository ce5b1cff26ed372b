"""One chunk of stock bars -> industry bars on dense numpy grids (the streamed build's core).

Same definitions as `industry.map_industries` + `stock_bar_returns` +
`aggregate_industry_returns` + `add_return_index` (the polars formulation, kept as the single-pass
reference), computed without a per-row join or a per-symbol window: rows come in runs of one
(symbol, day), so the classification is matched once per run and each run's first previous close
is the last close of the symbol's previous run; the (industry, bar) sums are `np.bincount`s into
an [industry x bar] grid, on which the return index is a cumulative product along bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from rotation_dl.data.runs import US_PER_MIN, day_starts, symbol_starts
from rotation_dl.industry.aggregate import map_industries
from rotation_dl.schema import INDUSTRY_BAR_SCHEMA

Weighting = Literal["equal", "amount"]


@dataclass
class ChunkResult:
    bars: pl.DataFrame  # industry bars of the chunk, INDUSTRY_BAR_SCHEMA, by (industry, ts)
    industries: list[str]  # industries with stock rows in the chunk
    last_close: pl.DataFrame  # (symbol, prev_close): each stock's last close in the chunk


def _bar_index(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bar index of each row, sorted distinct stamps); a dense minute grid when every stamp
    sits on a minute (store bars do), else a sort."""
    minute = t // US_PER_MIN
    if (minute * US_PER_MIN != t).any():
        times, idx = np.unique(t, return_inverse=True)
        return idx, times
    lo = int(minute.min())
    minute -= lo
    present = np.bincount(minute) > 0
    rank = np.cumsum(present) - 1
    return rank[minute], (np.flatnonzero(present) + lo) * US_PER_MIN


def industry_chunk(
    bars: pl.DataFrame,
    classification: pl.DataFrame,
    known_industries: set[str],
    *,
    weighting: Weighting = "equal",
    on_unmapped: Literal["fail", "drop"] = "fail",
    source: str = "classification",
    prev_close: pl.DataFrame | None = None,
    start_level: pl.DataFrame | None = None,
) -> ChunkResult | None:
    """Industry bars of one chunk of stock bars (None when no row has a positive close).

    Args:
        bars: symbol, ts, open, high, low, close, volume, amount, _vwap_gap; rows in time order
            within each symbol (store scans are).
        classification: symbol, industry, start, end (point-in-time when start/end are set).
        known_industries: industries seen in earlier chunks; the grid has them all.
        weighting: `equal` or `amount` weights for `ret` and the OHLC index.
        on_unmapped: `fail` or `drop` bars of symbols without an industry on their day.
        source: the classification's path, for errors.
        prev_close: (symbol, prev_close), each stock's last close before this chunk.
        start_level: (industry, level), each industry index's last level before this chunk.
    """
    if bars.is_empty():
        return None
    new_symbol, t = symbol_starts(bars)
    first = np.flatnonzero(day_starts(new_symbol, t))
    runs = bars.select("symbol", "ts")[first].with_row_index("_run")  # one (symbol, day) each
    mapped = map_industries(runs.lazy(), classification, on_unmapped, source=source).collect()
    run_ok = np.zeros(first.size, dtype=bool)
    run_ok[mapped["_run"].to_numpy()] = True
    run_industry = np.empty(first.size, dtype=object)
    run_industry[mapped["_run"].to_numpy()] = mapped["industry"].to_numpy()
    length = np.diff(np.append(first, bars.height))
    keep = bars["close"].to_numpy() > 0  # feed placeholders are absent
    if not run_ok.all():
        keep &= np.repeat(run_ok, length)
    live = np.arange(first.size)
    if not keep.all():
        run_id = np.repeat(live, length)[keep]
        bars, t = bars.filter(pl.Series(keep)), t[keep]
        if bars.is_empty():
            return None
        first = np.flatnonzero(np.diff(run_id, prepend=-1))
        length = np.diff(np.append(first, bars.height))
        live = run_id[first]
    run_industry, run_symbol = run_industry[live], runs["symbol"].gather(live)
    n = bars.height
    last = first + length - 1
    # one contiguous array per numeric column (a view when the column is one buffer); the
    # symbol strings are never copied
    cols = {c: bars[c].to_numpy() for c in ("open", "high", "low", "close", "volume", "amount")}
    close = cols["close"]

    # previous close: within a run the row before; a run's first row takes the symbol's previous
    # run's last close (runs of a symbol come in time order), else the carry, else its open
    sym_code = run_symbol.rank("dense").cast(pl.Int64).to_numpy() - 1
    order = np.argsort(sym_code, kind="stable")
    prev_run = np.full(first.size, -1)
    same = sym_code[order[1:]] == sym_code[order[:-1]]
    prev_run[order[1:][same]] = order[:-1][same]
    first_prev = np.where(prev_run >= 0, close[last[prev_run]], np.nan)
    if prev_close is not None and prev_close.height:
        carried = (
            pl.DataFrame({"symbol": run_symbol})
            .join(prev_close.select("symbol", "prev_close"), on="symbol", how="left",
                  maintain_order="left")["prev_close"]
            .fill_null(np.nan)
            .to_numpy()
        )  # fmt: skip
        first_prev = np.where(prev_run >= 0, first_prev, carried)
    prev = np.empty(n)
    prev[1:] = close[:-1]
    prev[first] = np.where(np.isnan(first_prev), cols["open"][first], first_prev)
    ret = np.divide(close, prev)
    ret -= 1

    # (industry, bar) grid over the cumulative industries and this chunk's bars
    industries = sorted(known_industries | set(run_industry.tolist()))
    code_of = {name: k for k, name in enumerate(industries)}
    row_industry = np.repeat(np.array([code_of[i] for i in run_industry]), length)
    bar, times = _bar_index(t)
    n_ind, n_bar = len(industries), times.size
    # only stocks that traded in the bar count: the others go to one extra bin, dropped
    size = n_ind * n_bar
    g = np.where(cols["volume"] > 0, row_industry * n_bar + bar, size)
    amount = cols["amount"]
    scratch, ratio = np.empty(n), np.empty(n)  # buffers for products and price relatives

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(g, weights=values, minlength=size + 1)[:size].reshape(n_ind, n_bar)

    count = np.bincount(g, minlength=size + 1)[:size].reshape(n_ind, n_bar)
    amount_sum = total(amount)
    empty = count == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        ret_ew = total(ret) / count
        ret_aw = np.where(
            amount_sum > 0, total(np.multiply(ret, amount, out=scratch)) / amount_sum, ret_ew
        )
        rel = {}
        for c in ("open", "high", "low"):
            r = np.divide(cols[c], prev, out=ratio)
            mean = total(r) / count
            rel[c] = (
                np.where(amount_sum > 0, total(np.multiply(r, amount, out=scratch)) / amount_sum,
                         mean)
                if weighting == "amount"
                else mean
            )  # fmt: skip
        vwap = bars["_vwap_gap"].to_numpy()  # null (as NaN) only without a trade
        unknown = np.isnan(vwap)
        vwap_n = count
        if unknown[g < size].any():  # a mean over the known values, as polars' mean skips nulls
            vwap_n = total((~unknown).astype(float))
        vwap_gap = total(np.where(unknown, 0.0, vwap)) / vwap_n
        up_share = total(np.greater(ret, 0, out=scratch)) / count

    # the return index, each industry from its carried level (or 1)
    level = np.ones(n_ind)
    if start_level is not None and start_level.height:
        lv = dict(zip(start_level["industry"].to_list(), start_level["level"].to_list(),
                      strict=True))  # fmt: skip
        level = np.array([1.0 if lv.get(i) is None else lv[i] for i in industries])
    r = ret_aw if weighting == "amount" else ret_ew
    index = level[:, None] * np.cumprod(1 + np.where(empty, 0.0, r), axis=1)
    before = np.concatenate([level[:, None], index[:, :-1]], axis=1)

    def flat(a: np.ndarray, missing: np.ndarray | None = empty) -> pl.Series:
        """Grid -> column in (industry, bar) order; `missing` cells become null."""
        s = pl.Series(a.ravel())
        if missing is None or not missing.any():
            return s
        return s.scatter(np.flatnonzero(missing.ravel()), None)

    stamps = pl.Series("ts", np.tile(times, n_ind)).cast(pl.Datetime("us"))
    out = pl.DataFrame(
        {
            "industry": pl.Series(
                np.repeat(np.array(industries, dtype=object), n_bar), dtype=pl.String
            ),  # fmt: skip
            "ts": stamps,
            "date": stamps.dt.date(),
            **{
                c: flat(before * np.where(empty, 1.0, rel[c]), missing=None)
                for c in ("open", "high", "low")
            },
            "close": flat(index, missing=None),
            "ret": flat(r),
            "ret_ew": flat(ret_ew),
            "ret_aw": flat(ret_aw),
            "volume": flat(total(cols["volume"]), missing=None),
            "amount": flat(amount_sum, missing=None),
            "n_active": flat(count, missing=None).cast(pl.UInt32),
            "up_share": flat(up_share),
            "vwap_gap": flat(vwap_gap, empty | (vwap_n == 0)),
        },
        schema=INDUSTRY_BAR_SCHEMA,
    )
    last_close = pl.DataFrame(
        {"symbol": run_symbol.gather(order), "prev_close": close[last[order]]}
    ).unique("symbol", keep="last", maintain_order=True)
    return ChunkResult(out, sorted(set(run_industry.tolist())), last_close)
