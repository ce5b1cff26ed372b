"""Portfolio selection with a buffer rule (METHODOLOGY section 2).

At each rebalance: keep a held industry while its rank stays within `buffer`; fill freed slots
with the best-ranked industries not held; make at most `max_swaps` replacements (held industries
outside the buffer beyond that cap are kept, worst-ranked dropped first); never hold an excluded
industry. `buffer = k` and `max_swaps = None` give plain top-k. Ranks: score descending, ties by
industry name; industries without a score rank last and are never bought.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class SelectionRule:
    k: int = 6
    buffer: int | None = None  # None: = k (plain top-k)
    max_swaps: int | None = None  # None: unlimited
    exclude: tuple[str, ...] = ()


SCORE_DECIMALS = 12  # scores are compared at this precision: equal fractions tie exactly


def tie_round(x):
    """Round scores to `SCORE_DECIMALS` before they are ranked or correlated, so values that
    are equal but for floating-point noise (a multi-horizon DI's equal fractions, 1 ulp apart)
    rank as ties. Takes a float, a numpy array or a polars expression."""
    import numpy as np

    if isinstance(x, float | int):
        return round(float(x), SCORE_DECIMALS)
    if isinstance(x, np.ndarray):
        return np.round(x, SCORE_DECIMALS)
    return x.round(SCORE_DECIMALS)


def rank_order(scores: dict[str, float | None]) -> list[str]:
    """Industries best first: score descending (at `SCORE_DECIMALS`), ties by name, missing
    scores last."""
    valid = [(i, tie_round(s)) for i, s in scores.items() if s is not None and s == s]
    missing = sorted(i for i, s in scores.items() if s is None or s != s)
    return [i for i, _ in sorted(valid, key=lambda t: (-t[1], t[0]))] + missing


def select(scores: dict[str, float | None], held: Iterable[str], rule: SelectionRule) -> list[str]:
    """The new holdings given this rebalance's scores and the current holdings (by name; the
    rule itself lives in `select_indices`)."""
    import numpy as np

    held = list(held)
    names = list(scores) + [h for h in dict.fromkeys(held) if h not in scores]
    values = np.array([[np.nan if (v := scores.get(n)) is None else v for n in names]], float)
    order, ranks = rank_orders(values, names)
    excluded = frozenset(j for j, n in enumerate(names) if n in set(rule.exclude))
    idx = {n: j for j, n in enumerate(names)}
    out = select_indices(
        order[0], ranks[0], np.isfinite(values[0]), [idx[h] for h in held], rule, excluded
    )
    return [names[j] for j in out]


def rank_orders(scores: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a [T, N] score matrix: industry indices best first (score descending at
    `SCORE_DECIMALS`, ties by name, NaN last) and each industry's 1-based rank. Same order as
    `rank_order`."""
    import numpy as np

    T, N = scores.shape
    name_rank = np.argsort(np.argsort(np.asarray(names, dtype=object)))
    key = np.where(np.isfinite(scores), -tie_round(scores), np.inf)
    # lexsort: last key is primary -> (missing last, score desc, name)
    order = np.lexsort((np.broadcast_to(name_rank, (T, N)), key), axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, N + 1)[None, :].repeat(T, 0), axis=1)
    return order, ranks


def select_indices(
    order: np.ndarray,
    ranks: np.ndarray,
    valid: np.ndarray,
    held: list[int],
    rule: SelectionRule,
    excluded: frozenset[int] = frozenset(),
) -> list[int]:
    """`select` on industry indices with precomputed ranks (the engine's fast path)."""
    buffer = rule.buffer if rule.buffer is not None else rule.k
    held = [h for h in held if h not in excluded]
    held_set = set(held)
    candidates = [int(i) for i in order if valid[i] and i not in held_set and i not in excluded]
    if not held:
        return candidates[: rule.k]
    keep = [h for h in held if valid[h] and ranks[h] <= buffer]
    keep_set = set(keep)
    leaving = sorted((h for h in held if h not in keep_set), key=lambda h: ranks[h])
    free = max(0, rule.k - len(keep))
    swaps = min(len(leaving), free, len(candidates))
    if rule.max_swaps is not None:
        swaps = min(swaps, rule.max_swaps)
    out = keep + leaving[: len(leaving) - swaps] + candidates[:swaps]
    if len(out) < rule.k:
        out += candidates[swaps : swaps + rule.k - len(out)]
    return sorted(out, key=lambda h: ranks[h])
