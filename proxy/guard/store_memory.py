"""The default guard store: one instance's budgets, history and cancel keys in memory.

Everything runs on the event loop thread without awaiting in between, so
each method is atomic with respect to other sessions of this instance. It is
also what a RedisStore falls back to while Redis is unreachable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from proxy.guard.hll import WindowSketch
from proxy.guard.store import MAX_MEMBERS, BudgetLimits, CancelKey, Usage, cancel_key_name
from proxy.guard.windows import Counters, bucket_ms, coverage_bucket_ms

# Sweep idle keys every this many writes, so abandoned users' state does not pile up.
_SWEEP_EVERY = 4096


class MemoryStore:
    """Per-instance store; `now` is the guard's clock, cancel keys expire by time.monotonic."""

    def __init__(self) -> None:
        self._counters: dict[str, tuple[Counters, float]] = {}  # key -> (counters, window)
        self._seen: dict[str, tuple[dict[str, float], float]] = {}  # key -> (member->t, window)
        self._sketches: dict[str, tuple[WindowSketch, float]] = {}  # key -> (sketch, window)
        self._touched: dict[str, float] = {}  # key -> last write (guard clock)
        self._cancel: dict[str, tuple[dict[str, Any], float]] = {}
        self._writes = 0

    @property
    def degraded(self) -> bool:
        return False

    def _counters_for(self, key: str, window: float) -> Counters:
        entry = self._counters.get(key)
        if entry is None:
            entry = (Counters(), window)
        self._counters[key] = (entry[0], window)
        return entry[0]

    def _touch(self, key: str, now: float) -> None:
        self._touched[key] = now
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        for key, last in list(self._touched.items()):
            window = max(
                (
                    e[1]
                    for e in (self._counters.get(key), self._seen.get(key), self._sketches.get(key))
                    if e is not None
                ),
                default=0.0,
            )
            if now - last > window + max(bucket_ms(window), coverage_bucket_ms(window)) / 1000:
                self._touched.pop(key, None)
                self._counters.pop(key, None)
                self._seen.pop(key, None)
                self._sketches.pop(key, None)

    async def admit(
        self,
        key: str,
        window: float,
        now: float,
        limits: BudgetLimits,
        *,
        enforce: bool,
        queries: int = 1,
    ) -> tuple[bool, Usage]:
        counters = self._counters_for(key, window)
        used = Usage(*counters.totals(now, window))
        if enforce and limits.exhausted(used, queries):
            return False, used
        counters.add(now, window, queries, 0, 0)
        self._touch(key, now)
        return True, used

    async def add(self, key: str, window: float, now: float, rows: int, nbytes: int) -> Usage:
        counters = self._counters_for(key, window)
        if rows or nbytes:
            counters.add(now, window, 0, rows, nbytes)
            self._touch(key, now)
        return Usage(*counters.totals(now, window))

    async def usage(self, key: str, window: float, now: float) -> Usage:
        entry = self._counters.get(key)
        return Usage(*entry[0].totals(now, window)) if entry else Usage()

    async def seen(self, key: str, member: str, window: float, now: float) -> int:
        count, _ = await self.first_seen(key, (member,), window, now)
        return count

    async def first_seen(
        self, key: str, members: Sequence[str], window: float, now: float
    ) -> tuple[int, list[str]]:
        held = self._seen.setdefault(key, ({}, window))[0]
        self._seen[key] = (held, window)
        # Members stay in last-seen order, so expiry and the size cap pop from the front.
        while held and held[next(iter(held))] <= now - window:
            del held[next(iter(held))]
        new = [m for m in dict.fromkeys(members) if m not in held]
        for member in members:
            held.pop(member, None)
            held[member] = now
        while len(held) > MAX_MEMBERS:
            del held[next(iter(held))]
        if members:
            self._touch(key, now)
        elif not held:
            del self._seen[key]  # a look at nothing leaves nothing behind
        return len(held), new

    async def cover(self, key: str, members: Sequence[str], window: float, now: float) -> int:
        entry = self._sketches.get(key)
        if entry is None:
            if not members:
                return 0
            entry = (WindowSketch(), window)
        sketch = entry[0]
        self._sketches[key] = (sketch, window)
        width, now_ms = coverage_bucket_ms(window), int(now * 1000)
        sketch.prune(now_ms, int(window * 1000), width)
        if members:
            sketch.add(now_ms - now_ms % width, members)
            self._touch(key, now)
        return sketch.count()

    async def put_cancel_key(self, key: CancelKey, target: dict[str, Any], ttl: float) -> None:
        now = time.monotonic()
        self._cancel[cancel_key_name(key)] = (dict(target), now + ttl)
        if len(self._cancel) % 1024 == 0:
            for name in [n for n, (_, exp) in self._cancel.items() if exp <= now]:
                del self._cancel[name]

    async def get_cancel_key(self, key: CancelKey) -> dict[str, Any] | None:
        entry = self._cancel.get(cancel_key_name(key))
        if entry is None or entry[1] <= time.monotonic():
            return None
        return dict(entry[0])

    async def del_cancel_key(self, key: CancelKey) -> None:
        self._cancel.pop(cancel_key_name(key), None)

    async def close(self) -> None:
        return None
