"""Wait for a condition, not for a guessed time.

A fixed sleep is either too short on a loaded machine (a flaky test) or too
long everywhere else (a slow suite). These helpers poll a probe until it
gives something truthy and return that, or fail the test with what they were
waiting for once `timeout` has passed. The timeout only bounds a wait that
would otherwise hang; it never decides a pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg

T = TypeVar("T")
TIMEOUT = 15.0
INTERVAL = 0.02


def wait_until(
    probe: Callable[[], T], *, timeout: float = TIMEOUT, interval: float = INTERVAL, what: str = ""
) -> T:
    """Call `probe` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what or probe}")
        time.sleep(interval)


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    what: str = "",
) -> T:
    """Await `probe()` until it gives something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what or probe}")
        await asyncio.sleep(interval)


async def running_upstream(dsn: str, marker: str) -> int:
    """How many other sessions of the server at `dsn` are running a statement with `marker`."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE query LIKE %s AND state = 'active' AND pid <> pg_backend_pid()",
            [f"%{marker}%"],
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def until_running(dsn: str, marker: str) -> None:
    """Wait until a statement containing `marker` is executing on the server at `dsn`."""
    await eventually(
        lambda: running_upstream(dsn, marker), what=f"a running statement with {marker!r}"
    )
