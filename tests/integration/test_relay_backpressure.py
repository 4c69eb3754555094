"""Backpressure in the relay: a client that stops reading stops the proxy reading the upstream.

Without it the proxy would buffer a whole result for a slow client (a 30 MB
result here; a table in practice) in its own memory.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rawclient import Raw

from proxy import messages as m

ROWS = 30_000  # of 1,000 bytes each: well past the kernel's socket buffers on loopback


async def _until(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"never {what}"
        await asyncio.sleep(0.02)


async def test_client_that_stops_reading_pauses_the_upstream(pg: Any, proxy_factory: Any) -> None:
    p = await proxy_factory()
    c = await Raw.open(p.port)
    await c.login(pg.user, pg.password, pg.dbname)
    (conn,) = p.server.connections.values()
    c.send(m.query(f"SELECT repeat('x', 1000) FROM generate_series(1, {ROWS})"))
    await c.w.drain()
    # The test's reader stops taking data once its own buffer is full, like a busy client.
    await _until(lambda: "peer full" in conn._held[False], "paused the upstream")
    frames = await c.until(b"Z", timeout=60)
    assert sum(1 for t, _ in frames if t == b"D") == ROWS
    assert [t for t, _ in frames[-2:]] == [b"C", b"Z"]
    await _until(lambda: not conn._held[False], "resumed the upstream")
    assert (await c.query("SELECT 1"))[-1][0] == b"Z"  # the session goes on
