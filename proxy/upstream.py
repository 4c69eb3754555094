"""Connecting to PostgreSQL: TCP, TLS per the upstream URI's sslmode, cancel requests."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

from proxy import messages as m
from proxy import metrics
from proxy.errors import UpstreamUnavailable
from proxy.settings import Upstream


def client_tls_context(up: Upstream) -> ssl.SSLContext:
    if up.sslmode in ("verify-ca", "verify-full"):
        ctx = ssl.create_default_context(cafile=up.sslrootcert)
        ctx.check_hostname = up.sslmode == "verify-full"
    else:  # require / prefer / allow: encrypt, do not verify (libpq semantics)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def connect(
    up: Upstream, *, timeout: float = 10.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
    """Open a connection to the upstream; returns (reader, writer, tls_in_use)."""
    started = time.monotonic()
    try:
        return await _connect(up, timeout)
    finally:
        metrics.upstream_latency(time.monotonic() - started)


async def _connect(
    up: Upstream, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(up.host, up.port, limit=1 << 20), timeout
        )
    except (OSError, TimeoutError) as e:
        raise UpstreamUnavailable(f"cannot connect to {up.host}:{up.port}: {e}") from e
    keepalive(writer)
    if up.sslmode in ("disable", "allow"):
        return reader, writer, False
    try:
        writer.write(m.SSL_REQUEST_BYTES)
        answer = await asyncio.wait_for(reader.readexactly(1), timeout)
        if answer == b"S":
            await asyncio.wait_for(
                writer.start_tls(client_tls_context(up), server_hostname=up.host), timeout
            )
            return reader, writer, True
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as e:
        writer.close()
        raise UpstreamUnavailable(f"TLS to {up.host}:{up.port} failed: {e}") from e
    if up.sslmode == "prefer":
        return reader, writer, False
    writer.close()
    raise UpstreamUnavailable(f"{up.host}:{up.port} does not offer TLS (sslmode={up.sslmode})")


async def send_cancel(host: str, port: int, pid: int, key: bytes, *, timeout: float = 5.0) -> None:
    """Deliver a CancelRequest; returns once the postmaster has closed the connection.

    The postmaster signals the backend before closing, so after this returns a
    later message cannot be hit by this cancel unless it was already in flight.
    """
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return
    try:
        writer.write(m.cancel_request(pid, key))
        await asyncio.wait_for(reader.read(1), timeout)
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()


def keepalive(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
    except OSError:
        pass
