"""Memory of idle sessions: the proxy's RSS with N client sessions open and doing nothing.

Every session through Oversight holds one upstream connection, and PostgreSQL
here allows about a hundred, so the proxy's upstream is a PgBouncer in
transaction mode (its server pool stays small); PgBouncer is measured alone in
the same run for comparison.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psycopg

from benchmarks import services
from benchmarks.services import Target


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _open(target: Target, n: int, stack: contextlib.ExitStack) -> float:
    """Open `n` sessions that each ran one statement; returns the seconds it took."""
    t0 = time.monotonic()
    for _ in range(n):
        conn = psycopg.connect(target.dsn(), autocommit=True)
        stack.callback(conn.close)
        conn.execute("SELECT 1")
    return time.monotonic() - t0


def idle_sessions(direct: Target, sessions: int) -> dict[str, Any]:
    """RSS of PgBouncer and of Oversight before and with `sessions` idle sessions open."""
    out: dict[str, Any] = {"sessions": sessions}
    with contextlib.ExitStack() as stack:
        pool = services.start_pgbouncer(
            stack,
            direct,
            name="pgbouncer-tx",
            pool_mode="transaction",
            max_client_conn=2 * sessions + 50,
        )
        proxy = services.start_oversight(stack, pool, "oversight-idle", None, audit=True).target
        for t in (pool, proxy):
            assert t.pid is not None
            before = rss_mib(t.pid)
            with contextlib.ExitStack() as conns:
                took = _open(t, sessions, conns)
                during = rss_mib(t.pid)
            out[t.name] = {
                "rss_mib_before": before,
                "rss_mib_with_sessions": during,
                "kib_per_session": (
                    (during - before) * 1024 / sessions if before and during else None
                ),
                "open_seconds": round(took, 1),
            }
    return out
