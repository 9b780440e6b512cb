"""Drawing in integer space: retail amounts in whole fen, weighted picks, and apportioning a count
over hours or classes.

Only ``random.Random.randrange`` is used (it draws from integer bits), never ``random()`` or
``lognormvariate``: no float ever reaches the ledger, and a seed gives the same amounts on every
platform. The amount buckets approximate a log-normal retail distribution piecewise: most
amounts are tens to a few hundred yuan, a few reach the top bucket.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from typing import Generic, TypeVar

from cbdc.simulation.scenario import AmountBucket

T = TypeVar("T")


class WeightedChoice(Generic[T]):
    """Pick items by integer weight with one ``randrange`` and a bisection."""

    __slots__ = ("_cumulative", "_items", "_total")

    def __init__(self, items: Sequence[T], weights: Sequence[int]) -> None:
        if len(items) != len(weights) or not items:
            raise ValueError("one weight per item, at least one item")
        if any(isinstance(w, bool) or not isinstance(w, int) or w < 0 for w in weights):
            raise ValueError("weights are non-negative integers")
        self._items = tuple(items)
        self._cumulative = list(itertools.accumulate(weights))
        self._total = self._cumulative[-1]
        if self._total <= 0:
            raise ValueError("at least one weight must be positive")

    def pick(self, rng: random.Random) -> T:
        return self._items[bisect.bisect_right(self._cumulative, rng.randrange(self._total))]


class AmountDistribution:
    """Retail amounts in fen: a bucket by weight, then a whole number of fen inside it."""

    __slots__ = ("_buckets",)

    def __init__(self, buckets: Sequence[AmountBucket]) -> None:
        self._buckets = WeightedChoice(list(buckets), [bucket.weight for bucket in buckets])

    def draw(self, rng: random.Random) -> int:
        bucket = self._buckets.pick(rng)
        return rng.randrange(bucket.low_fen, bucket.high_fen)


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` that sum to exactly ``total``
    (largest remainders; ties go to the earlier position)."""
    weight_sum = sum(weights)
    if total < 0 or weight_sum <= 0:
        raise ValueError("a non-negative total and some positive weight are needed")
    shares = [total * weight // weight_sum for weight in weights]
    remainders = sorted(
        range(len(weights)), key=lambda i: (-(total * weights[i] % weight_sum), i)
    )
    for index in remainders[: total - sum(shares)]:
        shares[index] += 1
    return shares


def part_of(total: int, numerator: int, denominator: int) -> int:
    """``total * numerator / denominator`` rounded down, in integers."""
    return total * numerator // denominator
