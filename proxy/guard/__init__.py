"""Extraction guard: per-statement caps, per-user windows, throttling, detectors and their stores.

`Guard` is what the composition layer calls (admit / pace / finished);
`make_store` picks the shared Redis store when a URL is configured
(settings `redis_url`, env OVERSIGHT_REDIS_URL) and memory otherwise.
"""

from __future__ import annotations

from proxy.guard.cancel import CancelDirectory, CancelTarget
from proxy.guard.core import Guard, GuardAdmission, GuardToken
from proxy.guard.detectors import Hit
from proxy.guard.limits import ExtractionSpec, spec_from_entry
from proxy.guard.store import BudgetLimits, Store, StoreUnavailable, Usage
from proxy.guard.store_memory import MemoryStore
from proxy.guard.store_redis import RedisStore


def make_store(redis_url: str | None, *, fail_closed: bool = False) -> Store:
    """RedisStore when a URL is given, else a per-instance MemoryStore."""
    if redis_url:
        return RedisStore(redis_url, fail_closed=fail_closed)
    return MemoryStore()


__all__ = [
    "BudgetLimits",
    "CancelDirectory",
    "CancelTarget",
    "ExtractionSpec",
    "Guard",
    "GuardAdmission",
    "GuardToken",
    "Hit",
    "MemoryStore",
    "RedisStore",
    "Store",
    "StoreUnavailable",
    "Usage",
    "make_store",
    "spec_from_entry",
]
