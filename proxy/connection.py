"""One client connection in the relay phase: the I/O that carries out a Session's actions.

After startup, both legs leave asyncio streams: their transports get a small
Protocol (`_Leg`) that hands each read straight to the sans-IO `Session`.
Actions that need no waiting (bytes to forward, a close) are carried out in
the read callback itself, with one write per peer per batch; only a batch
that must wait (a hooks decision, an audit record, a throttle) goes to a
task, and batches run in the order they were produced (one FIFO, as one lock
did before), so neither direction waits on the other unless the session says
so (PROTOCOL.md item 2).

Backpressure both ways: when a peer's write buffer passes its high-water
mark the transport calls `pause_writing`, and reading from the other leg
stops until it drains; when data read from one leg piles up behind a batch
that is still waiting, reading that leg stops too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

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
from proxy.audit import AuditLog
from proxy.errors import ProxyError, UpstreamUnavailable
from proxy.hooks import Admission, Hooks
from proxy.recorder import Recorder, Tally
from proxy.session import Session
from proxy.settings import Upstream
from proxy.startup import Handshake
from proxy.streams import take_buffered
from proxy.upstream import keepalive, send_cancel

log = logging.getLogger("oversight.session")

_BACKLOG_HIGH = 1 << 20  # bytes read but not yet fed to the session before reading pauses
_SYNC = (ToClient, ToServer, Close)
_WRITE_HIGH = 1 << 20  # a peer's unsent bytes before reading the other leg pauses


@dataclass(frozen=True, slots=True)
class Context:
    """What a Connection needs from the process, and nothing more (no server import)."""

    hooks: Hooks
    recorder: Recorder
    audit: AuditLog
    upstream: Upstream  # where cancel requests go


class _Leg(asyncio.Protocol):
    """The transport events of one leg (client or upstream), passed to the Connection."""

    __slots__ = ("client", "conn")

    def __init__(self, conn: Connection, client: bool) -> None:
        self.conn = conn
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.conn._data(self.client, data)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn._lost(self.client)

    def pause_writing(self) -> None:
        self.conn._hold(not self.client, "peer full", True)

    def resume_writing(self) -> None:
        self.conn._hold(not self.client, "peer full", False)


# A queued batch: which leg's read produced it (None: a cancel's follow-up),
# its actions, and whether a throttle check follows it.
_Work = tuple[bool | None, Iterable[Action], bool]


class Connection:
    def __init__(
        self,
        ctx: Context,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        hs: Handshake,
        session: Session,
    ) -> None:
        self.ctx = ctx
        self.hs = hs
        self.session = session
        self.tally = Tally()
        self._readers = (reader, hs.reader)
        self._client_t: asyncio.Transport = writer.transport  # type: ignore[assignment]
        self._server_t: asyncio.Transport = hs.writer.transport  # type: ignore[assignment]
        self._work: deque[_Work] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._busy = {True: False, False: False}  # a batch of this leg is queued or running
        self._backlog: dict[bool, deque[bytes]] = {True: deque(), False: deque()}
        self._backlog_bytes = {True: 0, False: 0}
        self._held: dict[bool, set[str]] = {True: set(), False: set()}
        self._closing = False
        self._ending: asyncio.Task[None] | None = None
        self._done: asyncio.Future[None] | None = None
        self._cancels: set[asyncio.Task[None]] = set()
        keepalive(writer)
        for t in (self._client_t, self._server_t):
            # uvloop raises RuntimeError on a transport closed since the handshake (a
            # client that hung up right after ReadyForQuery); run() sees it closing and
            # ends the session, closing the other leg too.
            with contextlib.suppress(RuntimeError):
                t.set_write_buffer_limits(high=_WRITE_HIGH)

    async def run(self) -> None:
        """Relay until the session ends; returns once it is recorded and both legs are closed."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        client_reader, server_reader = self._readers
        early = (take_buffered(client_reader), take_buffered(server_reader))
        eof = (client_reader.at_eof(), server_reader.at_eof())
        for t, client in ((self._client_t, True), (self._server_t, False)):
            t.set_protocol(_Leg(self, client))
            with contextlib.suppress(Exception):
                t.resume_reading()  # the stream may have paused it; a no-op otherwise
        for client, data, ended in ((True, early[0], eof[0]), (False, early[1], eof[1])):
            if data:
                self._data(client, data)
            if ended or self._transport(client).is_closing():
                self._lost(client)
        try:
            await asyncio.shield(self._done)
        finally:
            if not self._done.done():  # cancelled (shutdown past the grace period)
                await asyncio.shield(self._end_once("interrupted"))

    # ------------------------------------------------------------ reads

    def _transport(self, client: bool) -> asyncio.Transport:
        return self._client_t if client else self._server_t

    def _data(self, client: bool, data: bytes) -> None:
        if self._closing:
            return
        if self._busy[client]:
            self._backlog[client].append(data)
            self._backlog_bytes[client] += len(data)
            if self._backlog_bytes[client] > _BACKLOG_HIGH:
                self._hold(client, "backlog", True)
            return
        self._feed(client, data)

    def _feed(self, client: bool, data: bytes) -> None:
        session = self.session
        try:
            actions = session.client_data(data) if client else session.server_data(data)
        except Exception as exc:
            self._failed(exc)
            return
        throttle = False
        if not client:
            stmt = session.current()
            throttle = stmt is not None and stmt.plan.limits is not None
        if self._runner is None and not throttle and all(isinstance(a, _SYNC) for a in actions):
            self._carry_out(actions)
            return
        self._busy[client] = True
        self._queue((client, actions, throttle))

    def _queue(self, work: _Work) -> None:
        self._work.append(work)
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run_queue())

    def _hold(self, client: bool, reason: str, on: bool) -> None:
        """Pause reading `client`'s leg while any reason holds; resume when none does."""
        held = self._held[client]
        before = bool(held)
        if on:
            held.add(reason)
        else:
            held.discard(reason)
        if bool(held) == before:
            return
        t = self._transport(client)
        if t.is_closing():
            return
        with contextlib.suppress(Exception):
            if held:
                t.pause_reading()
            else:
                t.resume_reading()

    # ------------------------------------------------------------ actions

    def _carry_out(self, actions: Iterable[Action]) -> None:
        """Forward bytes with one write per peer; a Close ends the session after them."""
        to_client: list[bytes] = []
        to_server: list[bytes] = []
        close = False
        for a in actions:
            if isinstance(a, ToClient):
                to_client.append(a.data)
            elif isinstance(a, ToServer):
                to_server.append(a.data)
            elif isinstance(a, Close):
                if a.error is not None:
                    to_client.append(m.error_response(a.error.fields()))
                close = True
        self._write(to_client, to_server)
        if close:
            self._closing = True
            self._start_end("interrupted")

    def _write(self, to_client: list[bytes], to_server: list[bytes]) -> None:
        # Consecutive bytes for one peer go out in one write: a simple query's
        # reply (RowDescription, rows, CommandComplete, ReadyForQuery) is one
        # syscall, not four; a lone message is written as it arrived.
        if to_client and not self._client_t.is_closing():
            self._client_t.write(to_client[0] if len(to_client) == 1 else b"".join(to_client))
        if to_server and not self._server_t.is_closing():
            self._server_t.write(to_server[0] if len(to_server) == 1 else b"".join(to_server))
        to_client.clear()
        to_server.clear()

    async def _run_queue(self) -> None:
        """Carry out queued batches in order; after each, feed its leg's backlog."""
        try:
            while self._work and not self._closing:
                client, actions, throttle = self._work.popleft()
                await self._run(actions)
                if throttle:
                    await self._throttle()
                if client is not None:
                    self._next(client)
        except Exception as exc:
            self._failed(exc)
        finally:
            self._runner = None

    def _next(self, client: bool) -> None:
        self._busy[client] = False
        backlog = self._backlog[client]
        while backlog and not self._busy[client] and not self._closing:
            data = backlog.popleft()
            self._backlog_bytes[client] -= len(data)
            self._feed(client, data)
        if not backlog:
            self._hold(client, "backlog", False)

    async def _run(self, actions: Iterable[Action]) -> None:
        # Bytes queued after a Finish are written only once the audit record
        # is handed to the OS, which is the contract.
        to_client: list[bytes] = []
        to_server: list[bytes] = []
        todo = deque(actions)
        while todo:
            a = todo.popleft()
            if isinstance(a, ToClient):
                to_client.append(a.data)
            elif isinstance(a, ToServer):
                to_server.append(a.data)
            elif isinstance(a, Finish):
                # The reply's bytes wait too, and go out in one write with its
                # completion: writing the rows first would wake the client twice.
                await self.ctx.recorder.statement(self.session.facts, a.stmt, self.tally)
            elif isinstance(a, Decide):
                todo.extendleft(reversed(await self._decide(a)))
            elif isinstance(a, Throttle):
                self._write(to_client, to_server)  # earlier pipelined messages are not held back
                await asyncio.sleep(a.seconds)
            elif isinstance(a, CancelUpstream):
                task = asyncio.create_task(self._cancel_then_resume())
                self._cancels.add(task)
                task.add_done_callback(self._cancels.discard)
            elif isinstance(a, Close):
                if a.error is not None:
                    to_client.append(m.error_response(a.error.fields()))
                self._closing = True
        self._write(to_client, to_server)
        if self._closing:
            self._start_end("interrupted")

    async def _throttle(self) -> None:
        """A statement under stream limits: the hooks may hold the upstream back a while."""
        session = self.session
        stmt = session.current()
        if stmt is None or stmt.plan.limits is None:
            return
        adm = stmt.plan.admission
        pause = await self.ctx.hooks.throttle(session.facts, adm.token, stmt.rows, stmt.bytes)
        if pause > 0:
            stmt.paused += pause
            await asyncio.sleep(pause)

    async def _decide(self, a: Decide) -> list[Action]:
        t0 = time.perf_counter()
        try:
            self.ctx.audit.check_writable()
            hooks, facts = self.ctx.hooks, self.session.deciding_facts()
            if a.function_oid is not None:
                adm = await hooks.function_call(facts, a.function_oid)
            elif a.params is not None and a.token is not None:
                adm = await hooks.execute(facts, a.token, a.params)
            else:
                adm = await hooks.decide(
                    a.sql, facts, extended=a.extended, param_types=a.param_types
                )
        except ProxyError as e:
            adm = Admission(action="block", error=e, reason=e.message)
        except Exception as e:  # fail closed: a broken hook refuses, never passes
            log.exception("decision failed")
            err = ProxyError(f"oversight: internal error while deciding: {type(e).__name__}")
            adm = Admission(action="block", error=err, reason=err.message)
        return self.session.decided(adm, time.perf_counter() - t0)

    async def _cancel_then_resume(self) -> None:
        await self.cancel_upstream()
        if not self._closing:
            self._queue((None, self.session.cancel_done(), False))

    async def cancel_upstream(self) -> None:
        up = self.ctx.upstream
        await send_cancel(up.host, up.port, self.hs.backend_pid, self.hs.backend_key)

    # ------------------------------------------------------------ ending

    def _lost(self, client: bool) -> None:
        if self._closing:
            return
        self._closing = True
        if client:
            # The client vanished: stop its upstream query, then close the upstream.
            self._start_end("client disconnected", cancel=bool(self.session.queue))
            return
        if not self.session.upstream_fatal:  # else the client has the real reason
            err = UpstreamUnavailable("the upstream connection was lost")
            self._write([m.error_response(err.fields())], [])
        self._start_end("upstream connection lost")

    def _failed(self, exc: BaseException) -> None:
        log.error("session %s failed", self.session.facts.session_id, exc_info=exc)
        # Never leave a client waiting on a session that is gone.
        err = ProxyError("oversight: internal error, session closed")
        err.severity = "FATAL"
        self._write([m.error_response(err.fields())], [])
        self._closing = True
        self._start_end("interrupted")

    def _start_end(self, reason: str, *, cancel: bool = False) -> None:
        self._end_once(reason, cancel)

    def _end_once(self, reason: str, cancel: bool = False) -> asyncio.Task[None]:
        if self._ending is None:
            self._ending = asyncio.get_running_loop().create_task(self._end(reason, cancel))
        return self._ending

    async def shutdown(self, error: ProxyError) -> None:
        """Server shutdown past the grace period: tell the client, end the session."""
        self._closing = True
        self._write([m.error_response(error.fields())], [])
        running = bool(self.session.queue)
        await asyncio.shield(self._end_once("interrupted"))  # recorded as interrupted (DESIGN.md)
        if running:
            await self.cancel_upstream()

    async def _end(self, reason: str, cancel: bool = False) -> None:
        """Stop the queue, audit what is still owed a reply, close both legs (run once)."""
        self._closing = True
        runner = self._runner
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
            with contextlib.suppress(BaseException):
                await runner
        try:
            if cancel:
                await self.cancel_upstream()
            for a in self.session.interrupted(reason):
                if isinstance(a, Finish):
                    await self.ctx.recorder.statement(self.session.facts, a.stmt, self.tally)
        finally:
            for t in (self._server_t, self._client_t):
                with contextlib.suppress(Exception):
                    t.close()
            if self._done is not None and not self._done.done():
                self._done.set_result(None)
