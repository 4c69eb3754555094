"""Where the guard keeps state that must outlive a session: budgets, history, cancel keys.

One Oversight instance keeps it in memory; several instances behind a load
balancer share it through Redis so that a user's budget is one budget. The
guard talks to either through this protocol only.

Budgets are sliding windows made of fixed sub-buckets (windows.py). The
check-and-count of a new statement is one atomic step (`admit`), so two
instances racing on the last unit of a budget cannot both take it.

The subject-ledger detectors (ledger.py) keep two more kinds of history:
`first_seen` (which of a few members are new to the window: restricted
subjects) and `cover` (about how many distinct members the window holds:
coverage, a HyperLogLog per bucket, hll.py). Both take a statement's
members in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.errors import ProxyError

# What a client's CancelRequest carries: (pid, secret) with a 4-byte integer secret or
# the raw secret bytes (protocol 3.2 keys are variable length), or one opaque byte string.
CancelKey = tuple[int, int] | tuple[int, bytes] | bytes

# Distinct members a history key keeps at most: far above any detector threshold,
# small enough that a scraper's millions of lookups cannot exhaust memory.
MAX_MEMBERS = 10_000


class StoreUnavailable(ProxyError):
    """The shared guard store is down and the store was told to fail closed (58000)."""

    sqlstate = "58000"

    def __init__(self, reason: str):
        super().__init__(
            f"oversight: extraction guard store unavailable, statement refused: {reason}"
        )


@dataclass(frozen=True, slots=True)
class Usage:
    """A user's use of one budget over its window, before the statement being admitted."""

    queries: int = 0
    rows: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """The limits `Store.admit` checks atomically; None means unlimited."""

    max_queries: int | None = None
    max_rows: int | None = None
    max_bytes: int | None = None

    def exhausted(self, used: Usage, queries: int = 1) -> str | None:
        """What is used up if `queries` more statements ran now, or None."""
        if self.max_queries is not None and used.queries + queries > self.max_queries:
            return f"{used.queries} of {self.max_queries} queries"
        if self.max_rows is not None and used.rows >= self.max_rows:
            return f"{used.rows} of {self.max_rows} rows"
        if self.max_bytes is not None and used.bytes >= self.max_bytes:
            return f"{used.bytes} of {self.max_bytes} bytes"
        return None


def state_key(*parts: str) -> str:
    """A store key from rule id, user, ...; length prefixes keep `a:b`+`c` apart from `a`+`b:c`."""
    return ":".join(f"{len(p)}.{p}" for p in parts)


def cancel_key_name(key: CancelKey) -> str:
    """A stable string for a BackendKeyData key (4-byte pid/secret, or 3.2 variable length)."""
    if isinstance(key, bytes):
        return "b:" + key.hex()
    pid, secret = key
    if isinstance(secret, bytes):
        return f"{pid}:x{secret.hex()}"
    return f"{pid}:{secret}"


def encode_target(target: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of a cancel target: bytes values (backend secrets) become {"hex": ...}."""
    return {k: {"hex": v.hex()} if isinstance(v, bytes) else v for k, v in target.items()}


def decode_target(target: dict[str, Any]) -> dict[str, Any]:
    return {
        k: bytes.fromhex(v["hex"]) if isinstance(v, dict) and set(v) == {"hex"} else v
        for k, v in target.items()
    }


class Store(Protocol):
    """State shared by every guard that uses the same store."""

    @property
    def degraded(self) -> bool:
        """True while a shared store is unreachable and per-instance memory stands in."""
        ...

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
        """Atomically read usage and count `queries` unless `enforce` and exhausted.

        Returns (counted, usage before this statement).
        """
        ...

    async def add(self, key: str, window: float, now: float, rows: int, nbytes: int) -> Usage:
        """Account what a statement produced into the current bucket.

        Returns the usage over the window afterwards.
        """
        ...

    async def usage(self, key: str, window: float, now: float) -> Usage:
        """Current usage over the window (no change)."""
        ...

    async def seen(self, key: str, member: str, window: float, now: float) -> int:
        """Record `member` as seen now; return how many distinct members the window holds."""
        ...

    async def first_seen(
        self, key: str, members: Sequence[str], window: float, now: float
    ) -> tuple[int, list[str]]:
        """Record `members` as seen now (none: only look).

        Returns (distinct members the window holds afterwards, those of
        `members` it did not hold before: first sightings), capped at MAX_MEMBERS.
        """
        ...

    async def cover(self, key: str, members: Sequence[str], window: float, now: float) -> int:
        """Add `members` to the window's sketch (none: only look); about how many distinct
        members it holds (HyperLogLog, 0.81% standard error)."""
        ...

    async def put_cancel_key(self, key: CancelKey, target: dict[str, Any], ttl: float) -> None: ...

    async def get_cancel_key(self, key: CancelKey) -> dict[str, Any] | None: ...

    async def del_cancel_key(self, key: CancelKey) -> None: ...

    async def close(self) -> None: ...
