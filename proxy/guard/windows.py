"""Sliding windows as fixed sub-buckets: the arithmetic both stores share.

A window of W seconds is kept as BUCKETS buckets of W/BUCKETS seconds, each
keyed by its start time in milliseconds (not by an index), so that a rules
reload that changes W keeps the history meaningful. A bucket counts while
any part of it lies inside the window: the guard errs towards remembering
a little too long rather than forgetting too early. The Redis store runs the
same rules in Lua (store_redis.py); keep the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BUCKETS = 60


def bucket_ms(window: float) -> int:
    """Width of one bucket in milliseconds (at least 1)."""
    return max(int(window * 1000) // BUCKETS, 1)


def bucket_start(now: float, window: float) -> int:
    """Start (ms) of the bucket `now` falls in."""
    width = bucket_ms(window)
    return (int(now * 1000) // width) * width


def live(start_ms: int, now: float, window: float) -> bool:
    """Does the bucket starting at `start_ms` still overlap the window ending at `now`?"""
    return start_ms + bucket_ms(window) > int(now * 1000) - int(window * 1000)


@dataclass(slots=True)
class Counters:
    """One user's counters for one budget: bucket start (ms) -> [queries, rows, bytes]."""

    buckets: dict[int, list[int]] = field(default_factory=dict)

    def prune(self, now: float, window: float) -> None:
        for start in [s for s in self.buckets if not live(s, now, window)]:
            del self.buckets[start]

    def totals(self, now: float, window: float) -> tuple[int, int, int]:
        self.prune(now, window)
        q = r = b = 0
        for cq, cr, cb in self.buckets.values():
            q += cq
            r += cr
            b += cb
        return q, r, b

    def add(self, now: float, window: float, queries: int, rows: int, nbytes: int) -> None:
        cell = self.buckets.setdefault(bucket_start(now, window), [0, 0, 0])
        cell[0] += queries
        cell[1] += rows
        cell[2] += nbytes


# The coverage detector's windows are days long and each of its buckets is a
# HyperLogLog sketch (hll.py, or one Redis key): fewer, wider buckets bound its
# memory (at most COVERAGE_BUCKETS + 1 sketches of 16 KiB per user and rule) at
# the price of remembering up to one bucket (1/12 of the window) too long.
COVERAGE_BUCKETS = 12


def coverage_bucket_ms(window: float) -> int:
    return max(int(window * 1000) // COVERAGE_BUCKETS, 1)
