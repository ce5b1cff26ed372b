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


def rank_order(scores: dict[str, float | None]) -> list[str]:
    """Industries best first: score descending, ties by name, missing scores last."""
    valid = [(i, s) for i, s in scores.items() if s is not None and s == s]
    missing = sorted(i for i, s in scores.items() if s is None or s != s)
    return [i for i, _ in sorted(valid, key=lambda t: (-t[1], t[0]))] + missing


def select(scores: dict[str, float | None], held: Iterable[str], rule: SelectionRule) -> list[str]:
    """The new holdings given this rebalance's scores and the current holdings."""
    order = rank_order(scores)
    rank = {ind: r for r, ind in enumerate(order, 1)}
    scored = {i for i, s in scores.items() if s is not None and s == s}
    excluded = set(rule.exclude)
    buffer = rule.buffer if rule.buffer is not None else rule.k
    held = [h for h in held if h not in excluded]
    keep = [h for h in held if h in scored and rank[h] <= buffer]
    leaving = sorted((h for h in held if h not in keep), key=lambda h: rank.get(h, 10**9))
    candidates = [i for i in order if i in scored and i not in held and i not in excluded]
    free = max(0, rule.k - len(keep))
    if not held:  # building the first portfolio is not a swap
        return candidates[: rule.k]
    swaps = min(len(leaving), free, len(candidates))
    if rule.max_swaps is not None:
        swaps = min(swaps, rule.max_swaps)
    stay = leaving[: len(leaving) - swaps]  # the best-ranked of those leaving stay when capped
    new = candidates[:swaps]
    holdings = keep + stay + new
    if len(holdings) < rule.k:  # slots still free (e.g. fewer held than k): fill them
        extra = [c for c in candidates if c not in new][: rule.k - len(holdings)]
        holdings += extra
    return sorted(holdings, key=lambda h: rank.get(h, 10**9))


def run_selection(
    dates: Sequence,
    scores_by_date: Sequence[dict[str, float | None]],
    rule: SelectionRule,
    initial: Iterable[str] = (),
) -> list[list[str]]:
    """Holdings after each rebalance, applying `select` in date order."""
    held = list(initial)
    out = []
    for scores in scores_by_date:
        held = select(scores, held, rule)
        out.append(held)
    return out


def rank_orders(scores: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a [T, N] score matrix: industry indices best first (score descending, ties
    by name, NaN last) and each industry's 1-based rank. Same order as `rank_order`."""
    import numpy as np

    T, N = scores.shape
    name_rank = np.argsort(np.argsort(np.asarray(names, dtype=object)))
    key = np.where(np.isfinite(scores), -scores, np.inf)
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
