"""The stock panel: every constituent's bars as model input, built once from the store, cached.

Arrays over the industry panel's calendar (D days) and the classified stocks (S):

    x       [D, S, P, F]  per-bar stock features (the industry features' definitions applied to
                          the stock's own adjusted bars, plus `rel_ret`: the stock's bar return
                          minus its industry's in the same bar); float32, or float16 or
                          bfloat16 storage
    label   [D, S]        forward h-day return minus the mean over the date's active classified
                          stocks, rank-normalised among them
    fwd_ret [D, S]        the raw forward h-day return (close carried over suspensions)
    active  [D, S]        traded that day and listed at least `min_listed_days` days
    member  [D, S]        industry index (into the industry panel's industries) on that day,
                          point in time; -1 when unclassified or without bars
    amount  [D, S]        the day's traded amount (for amount-weighted aggregation)

The build streams the store `block_days` days at a time (each block reads `volume_window + 1`
days before it for the baselines and previous closes, and keeps only its own days) and appends
each block's features to the `.npy` file (written, never mapped while building), so peak memory
depends on the block and the [day, stock] masks, not on the length of history; the result is
memory-mapped on load. The cache directory holds plain `.npy` files and a manifest with the
hashes of every input; it is written under a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from rotation_dl.artifacts import remove_stale_temp_dirs, temp_dir_for
from rotation_dl.errors import ConfigError, DataError
from rotation_dl.features.bars import bar_features
from rotation_dl.features.labels import rank_normalise
from rotation_dl.features.spec import STOCK_STORAGE, FeatureSpec, definition_hash

log = logging.getLogger(__name__)
STOCK_CACHE_VERSION = 1
STOCK_ARRAYS = ("x", "label", "fwd_ret", "active", "member", "amount")
RELATIVE = "rel_ret"  # the stock's bar return minus its industry's, same bar


def storage_dtype(storage: str) -> np.dtype:
    """The feature array's dtype; bfloat16 is ml_dtypes' (an onnx dependency), stored on disk
    as its 16 raw bits (`.npy` has no bfloat16) and viewed back on load."""
    if storage not in STOCK_STORAGE:
        raise ConfigError(f"stock panel storage {storage!r}: use one of {list(STOCK_STORAGE)}")
    if storage == "bfloat16":
        try:
            import ml_dtypes
        except ImportError as exc:  # pragma: no cover - onnx brings it
            raise ConfigError("bfloat16 storage needs the ml_dtypes package") from exc
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(storage)


def _on_disk(dtype: np.dtype) -> np.dtype:
    """The dtype a feature array is written as: bfloat16 as uint16 bits."""
    return np.dtype(np.uint16) if dtype.name == "bfloat16" else dtype


def stock_feature_names(spec: FeatureSpec) -> tuple[str, ...]:
    """The stock panel's features: the spec's, less those only an industry defines
    (`up_share`), plus `rel_ret`."""
    return (*(f for f in spec.features if f != "up_share"), RELATIVE)


@dataclass
class StockPanel:
    """Dense stock panel (see the module docstring for the arrays)."""

    x: np.ndarray
    label: np.ndarray
    fwd_ret: np.ndarray
    active: np.ndarray
    member: np.ndarray
    amount: np.ndarray
    dates: list[date]
    symbols: list[str]
    industries: list[str]
    features: tuple[str, ...]
    spec: FeatureSpec
    extra: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.x.shape[3])

    def label_mask(self) -> np.ndarray:
        """Stock-days usable as targets: active, classified, with a known label."""
        return np.asarray(self.active) & (np.asarray(self.member) >= 0) & np.isfinite(self.label)

    def labels_frame(self) -> pl.DataFrame:
        """(date, symbol, label) over active stock-days with a label: stock-level IC."""
        d, s = np.nonzero(self.label_mask())
        return pl.DataFrame(
            {
                "date": np.asarray(self.dates, dtype="datetime64[D]")[d],
                "symbol": np.asarray(self.symbols)[s],
                "label": np.asarray(self.label, dtype=np.float64)[d, s],
            }
        ).with_columns(pl.col("date").cast(pl.Date))


# ---- building -----------------------------------------------------------------------------
def stock_bars_as_series(stock: pl.LazyFrame) -> pl.LazyFrame:
    """Adjusted stock bars with prev_close/ret/_vwap_gap/industry -> the industry-bar layout
    `bar_features` reads, keyed by symbol (in its `industry` column): n_active 1 when traded."""
    return stock.select(
        pl.col("symbol").alias("industry"),
        pl.col("industry").alias("_industry"),
        "ts",
        pl.col("ts").dt.date().alias("date"),
        "open",
        "high",
        "low",
        "close",
        "ret",
        "volume",
        "amount",
        (pl.col("volume") > 0).cast(pl.UInt32).alias("n_active"),
        pl.lit(None, dtype=pl.Float64).alias("up_share"),
        pl.col("_vwap_gap").alias("vwap_gap"),
    )


def block_features(
    stock: pl.DataFrame,
    industry_ret: pl.DataFrame,
    spec: FeatureSpec,
    names: Sequence[str],
    since: date | None = None,
) -> pl.DataFrame:
    """One block of adjusted stock bars (symbol, ts, OHLCV, ret, _vwap_gap, industry) ->
    (symbol, date, slot, <names>) of the days from `since` on (earlier days: read for the
    baselines only); `industry_ret` is (industry, ts, ind_ret)."""
    base = [n for n in names if n != RELATIVE]
    feats = bar_features(
        stock_bars_as_series(stock.lazy()),
        spec.bar_minutes,
        base,
        volume_window=spec.volume_window,
        session=spec.session,
        sort=False,  # each stock's rows come in time order; a string sort costs seconds
        keep=["_industry", "ret"],
        since=since,
    )
    ind = industry_ret.lazy().rename({"industry": "_industry"})
    feats = feats.join(ind, on=["_industry", "ts"], how="left", maintain_order="left")
    rel = (pl.col("ret") - pl.col("ind_ret")).alias(RELATIVE)
    return (
        feats.rename({"industry": "symbol"})
        .select("symbol", "date", "slot", *[rel if n == RELATIVE else n for n in names])
        .collect()
    )


def industry_returns_of(stock: pl.DataFrame, weighting: str = "equal") -> pl.DataFrame:
    """(industry, ts, ind_ret): each industry bar's return from its traded constituents' bar
    returns, the `ret` of industry bars (equal or amount weighted)."""
    from rotation_dl.industry.aggregate import aggregate_industry_returns

    agg = aggregate_industry_returns(stock.lazy(), weighting)  # type: ignore[arg-type]
    col = "ret_aw" if weighting == "amount" else "ret_ew"
    return agg.select("industry", "ts", pl.col(col).alias("ind_ret")).collect()


def _day_rows(stock: pl.DataFrame, first: date, symbols: list[str]) -> pl.DataFrame:
    """(symbol, date, close, traded, amount, industry) per stock-day from `first` on; each
    stock's rows come in time order (and a group keeps its rows' order), so `last` is the
    day's last bar."""
    return (
        stock.filter(pl.col("ts").dt.date() >= first)
        .group_by("symbol", pl.col("ts").dt.date().alias("date"))
        .agg(
            pl.col("close").last(),
            (pl.col("volume") > 0).any().alias("traded"),
            pl.col("amount").sum(),
            pl.col("industry").last(),
        )
        .filter(pl.col("symbol").is_in(symbols))
    )


def _positions(days: pl.Series, calendar: np.ndarray) -> np.ndarray:
    """Index of each date in the sorted `calendar` (-1 where it is not in it)."""
    values = days.to_numpy().astype("datetime64[D]")
    pos = np.searchsorted(calendar, values)
    pos = np.minimum(pos, len(calendar) - 1)
    return np.where(calendar[pos] == values, pos, -1)


def _date_blocks(n: int, block_days: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + block_days)) for i in range(0, n, block_days)]


def _stock_labels(
    close: np.ndarray, traded: np.ndarray, universe: np.ndarray, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Forward h-day returns of traded stock-days (the close carried over suspensions), and
    the label: their excess over the mean of the date's `universe` (active, classified
    stocks), rank-normalised within it -> (label, fwd_ret), both [D, S]."""
    D, S = close.shape
    filled = pl.DataFrame(close).select(pl.all().forward_fill()).to_numpy()
    fwd = np.full((D, S), np.nan, dtype=np.float64)
    if D > horizon:
        with np.errstate(invalid="ignore", divide="ignore"):
            fwd[: D - horizon] = filled[horizon:] / close[: D - horizon] - 1
    fwd[~traded] = np.nan
    within = np.where(universe, fwd, np.nan)
    with warnings.catch_warnings():  # an all-empty date has no mean: NaN, as intended
        warnings.simplefilter("ignore", category=RuntimeWarning)
        excess = within - np.nanmean(within, axis=1, keepdims=True)
    d, s = np.nonzero(np.isfinite(excess))
    ranked = pl.DataFrame({"date": d, "s": s, "e": excess[d, s]}).with_columns(
        rank_normalise("e").alias("label")
    )
    label = np.full((D, S), np.nan, dtype=np.float32)
    label[ranked["date"].to_numpy(), ranked["s"].to_numpy()] = ranked["label"].to_numpy()
    return label, fwd.astype(np.float32)


def build_stock_panel(
    stock_blocks,
    industry_ret: pl.DataFrame | str,
    dates: Sequence[date],
    industries: Sequence[str],
    symbols: Sequence[str],
    spec: FeatureSpec,
    out_dir: str | Path,
    *,
    lookback_days: int,
    block_days: int = 20,
    min_listed_days: int | None = None,
    storage: str = "float32",
    manifest: dict | None = None,
    history: Sequence[date] = (),
    labels: bool = True,
    listed_before: Sequence[str] = (),
) -> StockPanel:
    """Write the stock panel into `out_dir` (atomically) and return it memory-mapped.

    Args:
        stock_blocks: callable (first_date, last_date) -> adjusted stock bars of those days as
            a DataFrame (symbol, ts, OHLCV, prev_close, ret, _vwap_gap, industry), sorted by
            symbol and ts.
        industry_ret: (industry, ts, ind_ret) every industry bar's return, or the weighting
            (`equal`, `amount`) to compute it from each block's stock bars as the industry-bar
            build does (scoring: no industry bars needed).
        dates, industries, symbols: the panel's axes (dates: the industry panel's calendar).
        lookback_days: days each block reads before its first (baselines, previous closes).
        min_listed_days: days since a stock's first bar before it counts as active (default:
            the volume window); stocks trading on the first date count as listed long ago.
        storage: `float32`, `float16` or `bfloat16` for the feature array.
        history: trading days before `dates[0]` that blocks read for their look-back but the
            panel does not hold (scoring: features of the last weeks only). A stock with bars
            on the first history day counts as listed long ago, one first seen later as listed
            on that day (as the training panel counts it when it listed there).
        labels: False leaves `label` and `fwd_ret` NaN (scoring has no future to read).
        listed_before: stocks known to have traded before the first day read (a stock back
            from a suspension that began before it): listed long ago, whenever first seen.
    """
    dtype = storage_dtype(storage)
    names = stock_feature_names(spec)
    dates = list(dates)
    D, S, P, F = len(dates), len(symbols), spec.bars_per_day, len(names)
    if D == 0 or S == 0:
        raise DataError("no stocks or dates to build a stock panel from", file="store", count=0)
    day_array = np.asarray(dates, dtype="datetime64[D]")
    read_days = [*history, *dates]  # what blocks may read: the look-back reaches into history
    read_array, H = np.asarray(read_days, dtype="datetime64[D]"), len(history)
    symbol_enum = pl.Enum(list(symbols))  # symbol -> its index by one hashed cast
    n_idx = {n: i for i, n in enumerate(industries)}
    target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temp_dirs(target):  # left by a build that was killed
        log.info("removed %s, the temporary folder of an interrupted build", stale)
    tmp = temp_dir_for(target)
    tmp.mkdir()
    try:
        close = np.full((D, S), np.nan)
        traded = np.zeros((D, S), dtype=bool)
        member = np.full((D, S), -1, dtype=np.int16)
        amount = np.zeros((D, S), dtype=np.float32)
        first_seen = np.full(S, H + D)  # position in read_days of each stock's first day
        header = {"descr": np.lib.format.dtype_to_descr(_on_disk(dtype)),
                  "fortran_order": False, "shape": (D, S, P, F)}  # fmt: skip
        with open(tmp / "x.npy", "wb") as fh:  # blocks are consecutive days: appended in order
            np.lib.format.write_array_header_1_0(fh, header)
            for lo, hi in _date_blocks(D, block_days):
                block = np.full((hi - lo, S, P, F), np.nan, dtype=dtype)
                stock = stock_blocks(read_days[max(0, H + lo - lookback_days)], dates[hi - 1])
                if not stock.is_empty():
                    ind_ret = (
                        industry_ret
                        if isinstance(industry_ret, pl.DataFrame)
                        else industry_returns_of(stock, industry_ret)
                    )
                    feats = block_features(stock, ind_ret, spec, names, dates[lo]).filter(
                        pl.col("symbol").is_in(list(symbols))
                    )
                    di = _positions(feats["date"], day_array)
                    si = feats["symbol"].cast(symbol_enum).to_physical().to_numpy()
                    keep = di >= 0
                    vals = feats.select(names).to_numpy().astype(np.float32)
                    block[di[keep] - lo, si[keep], feats["slot"].to_numpy()[keep]] = vals[keep]
                    # stock-days of the block; the first also reads history's (first bars)
                    day = _day_rows(stock, read_days[0] if lo == 0 else dates[lo], list(symbols))
                    di = _positions(day["date"], read_array)
                    si = day["symbol"].cast(symbol_enum).to_physical().to_numpy()
                    np.minimum.at(first_seen, si[di >= 0], di[di >= 0])
                    ok = di >= H
                    di, si = di[ok] - H, si[ok]
                    close[di, si] = day["close"].to_numpy()[ok]
                    traded[di, si] = day["traded"].to_numpy()[ok]
                    amount[di, si] = day["amount"].to_numpy()[ok]
                    ind = day["industry"].replace_strict(n_idx, default=-1, return_dtype=pl.Int64)
                    member[di, si] = ind.to_numpy()[ok]
                # written, not mapped: memory stays one block
                fh.write(block.view(_on_disk(dtype)).tobytes())
        # listed since its first day read; one with bars on the first day read: long ago
        before = set(listed_before)
        known = [i for i, sym in enumerate(symbols) if sym in before]
        first_seen[known] = 0
        listed_since = np.where(first_seen == 0, -(10**6), first_seen - H)
        min_days = spec.volume_window if min_listed_days is None else min_listed_days
        active = traded & (np.arange(D)[:, None] - listed_since[None, :] >= min_days)
        if labels:
            label, fwd = _stock_labels(close, traded, active & (member >= 0), spec.horizon)
        else:
            label = fwd = np.full((D, S), np.nan, dtype=np.float32)
        arrays = {
            "label": label,
            "fwd_ret": fwd,
            "active": active,
            "member": member,
            "amount": amount,
        }
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
        man = {
            **(manifest or {}),
            "version": STOCK_CACHE_VERSION,
            "spec": spec.to_dict(),
            "features": list(names),
            "storage": storage,
            "dates": [d.isoformat() for d in dates],
            "symbols": list(symbols),
            "industries": list(industries),
            "shape": [D, S, P, F],
        }
        (tmp / "manifest.json").write_text(json.dumps(man, indent=1))
        try:
            os.replace(tmp, target)  # a folder: refused when the target exists
        except OSError:
            if not (target / "manifest.json").exists():
                raise
            # a concurrent build of the same key finished first: its panel is this one (same
            # key, same inputs); keep it rather than pull it from under its readers
            log.info("stock panel %s was built concurrently; using that one", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_stock_panel(target)


class CorruptPanelError(ValueError):
    """A cached stock panel that cannot be read as its manifest describes it."""


def load_stock_panel(directory: str | Path, mmap: bool = True) -> StockPanel:
    """Load a saved stock panel; arrays are memory-mapped read-only when `mmap`. Raises
    CorruptPanelError when a file is missing, truncated or of the wrong shape."""
    d = Path(directory)
    path = d / "manifest.json"
    try:
        man = json.loads(path.read_text())
        shape = tuple(man["shape"])
        arrays = {}
        for n in STOCK_ARRAYS:
            path = d / f"{n}.npy"
            arrays[n] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, KeyError) as exc:  # JSONDecodeError is a ValueError
        raise CorruptPanelError(f"{path}: {type(exc).__name__}: {exc}") from exc
    if man.get("storage") == "bfloat16":  # its raw bits on disk
        arrays["x"] = arrays["x"].view(storage_dtype("bfloat16"))
    wrong = [n for n, a in arrays.items() if a.shape != (shape if n == "x" else shape[:2])]
    if wrong:
        raise CorruptPanelError(f"{d}: {wrong} do not have the manifest's shape {shape}")
    return StockPanel(
        dates=[date.fromisoformat(s) for s in man["dates"]],
        symbols=man["symbols"],
        industries=man["industries"],
        features=tuple(man["features"]),
        spec=FeatureSpec.from_dict(man["spec"]),
        extra={"manifest": man, "dir": str(d)},
        **arrays,
    )


def stock_cache_key(spec: FeatureSpec, inputs: dict, storage: str) -> str:
    """Directory key: the spec, the code, the inputs' hashes and the storage dtype."""
    import inspect
    import sys

    code = inspect.getsource(sys.modules[__name__])
    blob = json.dumps(
        {"spec": spec.to_dict(), "inputs": inputs, "storage": storage}, sort_keys=True
    )
    return hashlib.sha256((blob + definition_hash() + code).encode()).hexdigest()[:16]
