"""Intervals on measured numbers (CURRICULUM rule 4: every sample-quality number a lesson ranks
carries one): the ``Interval`` type, the bias-shifted bootstrap percentile interval that every
bootstrap in ``ldm_edu.metrics`` reports, and Wilson's interval for a proportion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate with an interval: ``value`` and ``[low, high]``.

    >>> str(Interval(12.34, 10.1, 14.6))
    '12.3 [10.1, 14.6]'
    >>> Interval(5.0, 4.0, 6.0).overlaps(Interval(17.8, 16.0, 19.9))
    False
    """
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        d = self.digits()
        return f"{self.value:.{d}f} [{self.low:.{d}f}, {self.high:.{d}f}]"

    def digits(self) -> int:
        """Decimals for display: 1 for FID-sized numbers, more for small ones."""
        scale = max(abs(self.value), abs(self.low), abs(self.high))
        return 1 if scale >= 1 else 2 if scale >= 0.1 else 3 if scale >= 0.01 else 4

    @property
    def width(self) -> float:
        return self.high - self.low

    def overlaps(self, other: "Interval") -> bool:
        """True when the two intervals share at least one point."""
        return self.low <= other.high and other.low <= self.high

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


def shifted_percentiles(boot: np.ndarray, value: float, level: float) -> tuple[float, float]:
    """The (1 ∓ level)/2 percentiles of bootstrap replicates, shifted by the bootstrap's own bias
    (replicate mean − value): the interval every bootstrap in ``ldm_edu.metrics`` reports."""
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]) - (np.mean(boot) - value)
    return float(low), float(high)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> Interval:
    """Wilson's score interval for a binomial proportion p = successes/n (Wilson 1927):

        (p + z²/2n ∓ z √(p(1−p)/n + z²/4n²)) / (1 + z²/n).

    Unlike the Wald interval p ∓ z√(p(1−p)/n) it does not collapse to a point at p = 0 or 1."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 ≤ successes ≤ n and n ≥ 1, got {successes}, {n}")
    p = successes / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    d = 1 + z * z / n
    return Interval(p, max(0.0, (centre - half) / d), min(1.0, (centre + half) / d))
