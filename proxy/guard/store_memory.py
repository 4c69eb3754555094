"""The default guard store: one instance's budgets, history and cancel keys in memory.

Everything runs on the event loop thread without awaiting in between, so
each method is atomic with respect to other sessions of this instance. It is
also what a RedisStore falls back to while Redis is unreachable.
"""

from __future__ import annotations

import time
from typing import Any

from proxy.guard.store import MAX_MEMBERS, BudgetLimits, CancelKey, Usage, cancel_key_name
from proxy.guard.windows import Counters, bucket_ms

# Sweep idle keys every this many writes, so abandoned users' state does not pile up.
_SWEEP_EVERY = 4096


class MemoryStore:
    """Per-instance store; `now` is the guard's clock, cancel keys expire by time.monotonic."""

    def __init__(self) -> None:
        self._counters: dict[str, tuple[Counters, float]] = {}  # key -> (counters, window)
        self._seen: dict[str, tuple[dict[str, float], float]] = {}  # key -> (member->t, window)
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
            window = (self._counters.get(key) or self._seen.get(key) or (None, 0.0))[1]
            if now - last > window + bucket_ms(window) / 1000:
                self._touched.pop(key, None)
                self._counters.pop(key, None)
                self._seen.pop(key, None)

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
        members = self._seen.setdefault(key, ({}, window))[0]
        self._seen[key] = (members, window)
        # Members stay in last-seen order, so expiry and the size cap pop from the front.
        members.pop(member, None)
        members[member] = now
        while members:
            oldest = next(iter(members))
            if members[oldest] > now - window and len(members) <= MAX_MEMBERS:
                break
            del members[oldest]
        self._touch(key, now)
        return len(members)

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
