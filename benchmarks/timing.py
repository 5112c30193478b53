"""What the side-by-side benchmarks share: the best-of-rounds timer."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], n: int, rounds: int) -> float:
    """Best over `rounds` of the mean time of n calls (after one warm-up call), seconds."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best
