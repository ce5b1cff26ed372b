"""Trading costs: commission, transfer fee, stamp duty on sells (a dated schedule) and slippage.

A rebalance trades `buys` (the weight bought, a fraction of the portfolio) and `sells` (the
weight sold); its cost, as a fraction of the portfolio, is

    (buys + sells) * (commission + transfer + slippage) + sells * stamp(trade date)

in basis points / 10,000. Stamp duty follows its schedule by the trade date (A-shares: 10 bps
until 2023-08-27, 5 bps from 2023-08-28). The break-even cost is the single rate per unit
traded (buys + sells) at which the summed daily excess return is zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

BPS = 1e-4


@dataclass(frozen=True)
class CostModel:
    """Costs in basis points of the traded value. `stamp_duty` holds (effective from, bps on
    sells) steps in date order; before the first step there is none."""

    commission_bps: float = 0.0  # each side
    transfer_bps: float = 0.0  # each side
    slippage_bps: float = 0.0  # each side, per unit of turnover
    stamp_duty: tuple[tuple[date, float], ...] = ()

    def __post_init__(self) -> None:
        for name in ("commission_bps", "transfer_bps", "slippage_bps"):
            if not 0 <= getattr(self, name) < 10_000:
                raise ValueError(f"{name} must be in [0, 10000) bps, got {getattr(self, name)}")
        starts = [d for d, _ in self.stamp_duty]
        if starts != sorted(starts) or len(set(starts)) != len(starts):
            raise ValueError(f"stamp_duty steps must be in increasing date order: {starts}")
        if any(not 0 <= bps < 10_000 for _, bps in self.stamp_duty):
            raise ValueError("stamp_duty rates must be in [0, 10000) bps")

    @property
    def each_side_bps(self) -> float:
        return self.commission_bps + self.transfer_bps + self.slippage_bps

    def stamp_bps(self, days: Sequence[date] | np.ndarray) -> np.ndarray:
        """Stamp duty (bps on sells) in force on each trade date."""
        d = np.asarray(days, dtype="datetime64[D]")
        if not self.stamp_duty:
            return np.zeros(len(d))
        starts = np.array([s for s, _ in self.stamp_duty], dtype="datetime64[D]")
        rates = np.array([0.0, *(r for _, r in self.stamp_duty)])
        return rates[np.searchsorted(starts, d, side="right")]

    def cost(
        self, buys: np.ndarray, sells: np.ndarray, days: Sequence[date] | np.ndarray
    ) -> np.ndarray:
        """Cost of each trade as a fraction of the portfolio's value."""
        buys, sells = np.asarray(buys, dtype=float), np.asarray(sells, dtype=float)
        return (buys + sells) * self.each_side_bps * BPS + sells * self.stamp_bps(days) * BPS

    def is_free(self) -> bool:
        return self.each_side_bps == 0 and all(r == 0 for _, r in self.stamp_duty)

    def describe(self) -> str:
        stamp = ", ".join(f"{r:g} bps from {d}" for d, r in self.stamp_duty) or "none"
        return (
            f"commission {self.commission_bps:g} bps, transfer {self.transfer_bps:g} bps, "
            f"slippage {self.slippage_bps:g} bps each side; stamp duty on sells: {stamp}"
        )


def uniform(rate: float) -> CostModel:
    """One proportional rate per unit traded (the former `portfolio.cost_rate`)."""
    return CostModel(slippage_bps=rate / BPS)


def break_even_bps(excess_gross: np.ndarray, traded: np.ndarray) -> float:
    """The rate per unit traded (bps) at which the summed daily excess is zero: the gross
    excess's sum over the turnover's sum. NaN without trades; negative when the gross excess
    already is."""
    total = float(np.nansum(traded))
    if total <= 0:
        return float("nan")
    return float(np.nansum(excess_gross)) / total / BPS
