"""One client connection in the relay phase: the I/O that carries out a Session's actions.

Two pumps run concurrently, client→upstream and upstream→client, so neither
direction waits on the other (PROTOCOL.md item 2). Both feed the same
sans-IO `Session` and carry out its actions under one lock, in the order
the session produced them; writes are buffered under the lock and drained
outside it, so a full socket in one direction can never stall the other
(the two-way write deadlock pgjdbc works around).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from proxy import messages as m
from proxy.actions import (
    Action,
    CancelUpstream,
    Close,
    Decide,
    Finish,
    Throttle,
    ToClient,
    ToServer,
)
from proxy.errors import ProxyError, UpstreamUnavailable
from proxy.hooks import Admission
from proxy.recorder import Tally
from proxy.session import Session
from proxy.startup import Handshake
from proxy.upstream import keepalive, send_cancel

if TYPE_CHECKING:
    from proxy.server import ProxyServer

log = logging.getLogger("oversight.session")


class Connection:
    def __init__(
        self,
        server: ProxyServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        hs: Handshake,
        session: Session,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.hs = hs
        self.session = session
        self.tally = Tally()
        self._lock = asyncio.Lock()
        self._closing = False
        self._cancels: set[asyncio.Task[None]] = set()
        keepalive(writer)

    async def run(self) -> None:
        pumps = [
            asyncio.create_task(self._client_pump(), name="client-pump"),
            asyncio.create_task(self._upstream_pump(), name="upstream-pump"),
        ]
        try:
            done, _pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    log.error(
                        "session %s failed",
                        self.session.facts.session_id,
                        exc_info=t.exception(),
                    )
                    # Never leave a client waiting on a session that is gone.
                    err = ProxyError("oversight: internal error, session closed")
                    err.severity = "FATAL"
                    with contextlib.suppress(Exception):
                        self.writer.write(m.error_response(err.fields()))
        finally:
            for t in pumps:
                t.cancel()
            for t in pumps:
                with contextlib.suppress(BaseException):
                    await t
            await self._finish("interrupted")

    # ------------------------------------------------------------ pumps

    async def _client_pump(self) -> None:
        size = self.server.settings.read_size
        while not self._closing:
            try:
                data = await self.reader.read(size)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                await self._client_gone()
                return
            await self._run(self.session.client_data(data))
            await self._drain(self.hs.writer)

    async def _upstream_pump(self) -> None:
        size = self.server.settings.read_size
        session = self.session
        while not self._closing:
            try:
                data = await self.hs.reader.read(size)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                if not self._closing:
                    if not session.upstream_fatal:  # else the client has the real reason
                        err = UpstreamUnavailable("the upstream connection was lost")
                        self.writer.write(m.error_response(err.fields()))
                    await self._finish("upstream connection lost")
                return
            await self._run(session.server_data(data))
            await self._drain(self.writer)
            stmt = session.current()
            if stmt is not None and stmt.plan.limits is not None:
                adm = stmt.plan.admission
                pause = await self.server.hooks.throttle(
                    session.facts, adm.token, stmt.rows, stmt.bytes
                )
                if pause > 0:
                    stmt.paused += pause
                    await asyncio.sleep(pause)

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()

    # ------------------------------------------------------------ actions

    async def _run(self, actions: Iterable[Action]) -> None:
        # Consecutive bytes for one peer go out in one write: a simple query's
        # reply (RowDescription, rows, CommandComplete, ReadyForQuery) is one
        # syscall, not four. Bytes queued after a Finish are written only once
        # the audit record is handed to the OS, which is the contract.
        to_client: list[bytes] = []
        to_server: list[bytes] = []

        def flush() -> None:
            if to_client:
                self.writer.write(b"".join(to_client))
                to_client.clear()
            if to_server:
                self.hs.writer.write(b"".join(to_server))
                to_server.clear()

        async with self._lock:
            todo = deque(actions)
            while todo:
                a = todo.popleft()
                if isinstance(a, ToClient):
                    to_client.append(a.data)
                elif isinstance(a, ToServer):
                    to_server.append(a.data)
                elif isinstance(a, Finish):
                    await self.server.recorder.statement(self.session.facts, a.stmt, self.tally)
                elif isinstance(a, Decide):
                    todo.extendleft(reversed(await self._decide(a)))
                elif isinstance(a, Throttle):
                    flush()  # earlier pipelined messages are not the ones held back
                    await asyncio.sleep(a.seconds)
                elif isinstance(a, CancelUpstream):
                    task = asyncio.create_task(self._cancel_then_resume())
                    self._cancels.add(task)
                    task.add_done_callback(self._cancels.discard)
                elif isinstance(a, Close):
                    if a.error is not None:
                        to_client.append(m.error_response(a.error.fields()))
                    self._closing = True
            flush()

    async def _decide(self, a: Decide) -> list[Action]:
        t0 = time.perf_counter()
        try:
            self.server.audit.check_writable()
            hooks, facts = self.server.hooks, self.session.facts
            if a.function_oid is not None:
                adm = await hooks.function_call(facts, a.function_oid)
            elif a.params is not None and a.token is not None:
                adm = await hooks.execute(facts, a.token, a.params)
            else:
                adm = await hooks.decide(a.sql, facts, extended=a.extended)
        except ProxyError as e:
            adm = Admission(action="block", error=e, reason=e.message)
        except Exception as e:  # fail closed: a broken hook refuses, never passes
            log.exception("decision failed")
            err = ProxyError(f"oversight: internal error while deciding: {type(e).__name__}")
            adm = Admission(action="block", error=err, reason=err.message)
        return self.session.decided(adm, time.perf_counter() - t0)

    async def _cancel_then_resume(self) -> None:
        await self.cancel_upstream()
        await self._run(self.session.cancel_done())

    async def cancel_upstream(self) -> None:
        up = self.server.upstream
        await send_cancel(up.host, up.port, self.hs.backend_pid, self.hs.backend_key)

    # ------------------------------------------------------------ ending

    async def _client_gone(self) -> None:
        """The client vanished: stop its upstream query, then close the upstream."""
        self._closing = True
        if self.session.queue:
            await self.cancel_upstream()
        await self._finish("client disconnected")

    async def shutdown(self, error: ProxyError) -> None:
        """Server shutdown past the grace period: tell the client, end the session."""
        self._closing = True
        with contextlib.suppress(Exception):
            self.writer.write(m.error_response(error.fields()))
        running = bool(self.session.queue)
        await self._finish("interrupted")  # recorded as interrupted, as DESIGN.md says
        if running:
            await self.cancel_upstream()

    async def _finish(self, reason: str) -> None:
        self._closing = True
        async with self._lock:
            for a in self.session.interrupted(reason):
                if isinstance(a, Finish):
                    await self.server.recorder.statement(self.session.facts, a.stmt, self.tally)
        for w in (self.hs.writer, self.writer):
            with contextlib.suppress(Exception):
                w.close()
