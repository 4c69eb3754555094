"""The listener: accepts clients, runs startup, hands each to a Connection; cancels; shutdown.

This and `connection.py`/`startup.py` are the only modules that touch
sockets; the protocol logic lives in the sans-IO `session.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import ssl
import time
from collections.abc import Awaitable
from dataclasses import replace
from typing import TypeVar

from proxy import messages as m
from proxy import metrics
from proxy.audit import AuditLog
from proxy.connection import Connection, Context
from proxy.errors import AdminShutdown, ProtocolViolation, ProxyError, TooManyConnections
from proxy.guard.cancel import CancelDirectory, CancelTarget
from proxy.hooks import Hooks
from proxy.identity import SessionFacts
from proxy.idsrc.resolver import IdentityResolver
from proxy.listener import ALPN, Listener
from proxy.login import ProxyLogin
from proxy.recorder import Recorder
from proxy.session import Session
from proxy.settings import Settings
from proxy.startup import AuthFailure, check_startup, connect_upstream, negotiate
from proxy.upstream import send_cancel
from proxy.watching import Watching

log = logging.getLogger("oversight")
T = TypeVar("T")


def server_tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls_cert or not settings.tls_key:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    ctx.set_alpn_protocols([ALPN])
    return ctx


class ProxyServer:
    """Built by `proxy.run.build_server`, the one place the process is composed."""

    def __init__(
        self,
        settings: Settings,
        hooks: Hooks,
        *,
        audit: AuditLog,
        recorder: Recorder,
        login: ProxyLogin | None = None,
        identities: IdentityResolver | None = None,
        cancels: CancelDirectory | None = None,
        watching: Watching | None = None,
    ) -> None:
        self.settings = settings
        self.upstream = settings.upstream_target
        self.hooks = hooks
        self.audit = audit
        self.recorder = recorder
        self.context = Context(self.hooks, self.recorder, self.audit, self.upstream)
        self.tls = server_tls_context(settings)
        self.connections: dict[tuple[int, bytes], Connection] = {}
        # Shared with other instances (Redis) so a cancel landing elsewhere still works.
        self.cancels = cancels
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: Listener | None = None
        self._ids = itertools.count(1)
        self._prefix = os.urandom(3).hex()
        self._clients = 0
        self.login = login  # proxy auth mode's checks; None in passthrough mode
        self.identities = identities  # groups and attributes from identity sources
        self.watching = watching  # the subject ledger's watched columns, per database

    @property
    def port(self) -> int:
        assert self._listener is not None
        return self._listener.port

    @property
    def host(self) -> str:
        return self.settings.listen_address[0]

    async def start(self) -> None:
        await self.audit.start()
        host, port = self.settings.listen_address
        self._listener = Listener(host, port, self._accept, self.tls, self.settings.startup_timeout)
        await self._listener.start()
        up = self.upstream
        log.info("listening on %s:%d, upstream %s:%d", host, self.port, up.host, up.port)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting; let sessions finish up to `grace` seconds; end the rest."""
        grace = self.settings.shutdown_grace if grace is None else grace
        if self._listener is not None:
            await self._listener.close()
        pending = set(self._tasks)
        if pending and grace > 0:
            _, pending = await asyncio.wait(pending, timeout=grace)
        if pending:
            err = AdminShutdown("oversight: terminating connection due to shutdown")
            await asyncio.gather(
                *(c.shutdown(err) for c in list(self.connections.values())),
                return_exceptions=True,
            )
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.audit.close()

    # ------------------------------------------------------------ per client

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direct_tls: bool
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._clients += 1
        try:
            full = self._clients > self.settings.max_clients
            await self._serve(reader, writer, full=full, direct_tls=direct_tls)
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as e:
            log.debug("client connection ended: %r", e)
        except asyncio.CancelledError:
            pass  # shutdown past the grace period; the session was already ended
        except Exception:
            log.exception("unexpected error in a client connection")
        finally:
            self._clients -= 1
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        full: bool,
        direct_tls: bool,
    ) -> None:
        s = self.settings
        peer = writer.get_extra_info("peername") or ("", 0)
        try:
            packet, client_tls = await asyncio.wait_for(
                negotiate(reader, writer, self.tls, direct_tls), s.startup_timeout
            )
            if isinstance(packet, m.CancelRequest):
                await self._cancel(packet)
                return
            check_startup(packet)
            if full:  # said after startup, as PostgreSQL does, so clients show the message
                raise TooManyConnections("oversight: sorry, too many clients already")
        except TimeoutError:
            self._refuse(writer, ProtocolViolation("oversight: startup timeout"))
            return
        except ProxyError as e:
            self._refuse(writer, e)
            return
        params = packet.params
        facts = SessionFacts(
            user=params["user"],
            database=params.get("database") or params["user"],
            application=params.get("application_name", ""),
            client_ip=str(peer[0]),
            client_port=int(peer[1]),
            session_id=f"{self._prefix}-{next(self._ids)}",
        )
        started = time.monotonic()
        try:
            hs = await asyncio.wait_for(
                connect_upstream(
                    self.upstream,
                    reader,
                    writer,
                    packet,
                    client_tls,
                    max_message=s.max_message_size,
                    login=self.login,
                    identities=self.identities,
                ),
                s.startup_timeout,
            )
        except AuthFailure as e:
            await self.recorder.event(
                "auth_failure", facts, error=f"{e.fields.get('C', '')}: {e.fields.get('M', '')}"
            )
            return
        except TimeoutError:
            self._refuse(writer, ProtocolViolation("oversight: authentication timeout"))
            return
        except ProxyError as e:
            self._refuse(writer, e)
            return
        if hs.search_path is not None:
            facts = replace(facts, search_path=hs.search_path)
        facts = replace(facts, purpose=hs.purpose)
        facts = replace(facts, groups=hs.identity.groups, attributes=hs.identity.attributes)
        session = Session(facts, max_message=s.max_message_size, watching=self.watching)
        session.status = hs.status
        session.parameters.update(hs.parameters)
        conn = Connection(self.context, reader, writer, hs, session)
        key = (hs.backend_pid, hs.proxy_key)
        self.connections[key] = conn
        if self.cancels is not None:
            target = CancelTarget(
                self.upstream.host, self.upstream.port, hs.backend_pid, hs.backend_key
            )
            await self._quietly(self.cancels.register(hs.backend_pid, hs.proxy_key, target))
        metrics.session_opened()
        await self.recorder.event(
            "connect",
            facts,
            tls=client_tls,
            backend_pid=hs.backend_pid,
            search_path=list(facts.search_path),  # read with SHOW at startup
        )
        try:
            await conn.run()
        finally:
            self.connections.pop(key, None)
            if self.cancels is not None:
                await self._quietly(self.cancels.unregister(*key))
            metrics.session_closed()
            t = conn.tally
            await self.recorder.event(
                "disconnect",
                session.facts,
                statements=t.statements,
                blocked=t.blocked,
                rows=t.rows,
                bytes=t.bytes,
                duration_ms=round((time.monotonic() - started) * 1000, 3),
            )

    async def _cancel(self, req: m.CancelRequest) -> None:
        conn = self.connections.get((req.pid, req.key))
        if conn is not None:
            await conn.cancel_upstream()
        elif self.cancels is not None:
            target = await self._quietly(self.cancels.lookup(req.pid, req.key))
            if target is not None:
                await send_cancel(target.host, target.port, target.pid, target.secret)

    @staticmethod
    async def _quietly(aw: Awaitable[T]) -> T | None:
        """Cancel-key sharing is best effort: a store outage must not end sessions."""
        try:
            return await aw
        except Exception as e:
            log.warning("cancel key store: %s", e)
            return None

    @staticmethod
    def _refuse(writer: asyncio.StreamWriter, error: ProxyError) -> None:
        if writer.is_closing():
            return  # the client is gone; uvloop would raise on the write
        if error.severity == "ERROR":
            error.severity = "FATAL"
        writer.write(m.error_response(error.fields()))
