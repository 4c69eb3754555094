"""Accepting client sockets; direct TLS is told apart by peeking at the first byte.

PostgreSQL 17 clients may skip SSLRequest and start the TLS handshake at
once (`sslnegotiation=direct`, PROTOCOL.md item 12). A stream reader would
consume that first byte, so each accepted socket is peeked at before any
stream exists: 0x16 (a TLS record) gets TLS with ALPN `postgresql` required,
anything else the ordinary plaintext start (where SSLRequest may follow).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

log = logging.getLogger("oversight")

TLS_RECORD = 0x16
ALPN = "postgresql"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bool], Awaitable[None]]


class Listener:
    def __init__(
        self, host: str, port: int, handler: Handler, tls: ssl.SSLContext | None, timeout: float
    ) -> None:
        self.host, self.requested_port = host, port
        self.handler = handler
        self.tls = tls
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    async def start(self) -> None:
        infos = await asyncio.get_running_loop().getaddrinfo(
            self.host, self.requested_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(1024)
        sock.setblocking(False)
        self._sock = sock
        self._loop_task = asyncio.create_task(self._accept_loop(), name="oversight-accept")

    async def close(self) -> None:
        """Stop accepting; running sessions are not touched."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._sock is not None:
            self._sock.close()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as e:  # EMFILE and friends: wait a little rather than spin
                log.warning("accept failed: %s", e)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._open(conn))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _open(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        direct = False
        if self.tls is not None:
            direct = await self._starts_with_tls(conn)
        reader = asyncio.StreamReader(limit=1 << 20)
        made: asyncio.Future[asyncio.StreamWriter] = loop.create_future()
        # A connected-callback marks the protocol server-side, which start_tls
        # (after an SSLRequest) needs; it also hands over the writer.
        protocol = asyncio.StreamReaderProtocol(reader, lambda _r, w: made.set_result(w))
        try:
            await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=self.tls if direct else None,
                ssl_handshake_timeout=self.timeout if direct else None,
            )
        except (OSError, ssl.SSLError, TimeoutError):
            conn.close()
            return
        writer = await made
        if direct:
            obj = writer.get_extra_info("ssl_object")
            if obj is None or obj.selected_alpn_protocol() != ALPN:
                writer.close()  # PostgreSQL too refuses direct TLS without ALPN
                return
        await self.handler(reader, writer, direct)

    async def _starts_with_tls(self, conn: socket.socket) -> bool:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(conn.fileno(), readable)
        try:
            await asyncio.wait_for(ready, self.timeout)
            first = conn.recv(1, socket.MSG_PEEK)
        except (TimeoutError, OSError):
            return False  # the startup timeout will answer it
        finally:
            loop.remove_reader(conn.fileno())
        return first[:1] == bytes((TLS_RECORD,))
