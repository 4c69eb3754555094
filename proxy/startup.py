"""The startup phase: TLS negotiation, StartupMessage, authentication relay, key swap.

This is the one stretch of the protocol that is a strict conversation, so it
is written as plain async code over the two streams. Once the upstream says
ReadyForQuery the connection is handed to the sans-IO `Session`.

Authentication is passed through: the upstream checks the client's own
credentials. SCRAM-SHA-256-PLUS is never offered to the client (the proxy
terminates the client's TLS, so its channel binding could not verify).
When both legs use TLS, relayed SCRAM cannot work (PROTOCOL.md item 19:
the client's gs2 flag `y` is a downgrade to a TLS upstream that offers
-PLUS, and the proof covers that flag), so the proxy then asks the client
for its password over the client's TLS leg and runs SCRAM upstream itself.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass, field

import scramp

from proxy import messages as m
from proxy.errors import FeatureNotSupported, ProtocolViolation, ProxyError
from proxy.settings import Upstream
from proxy.upstream import connect
from proxy.wire import INT32, MAX_STARTUP, Frame

TLS_RECORD = 0x16


@dataclass(slots=True)
class Handshake:
    """What startup established, for the relay phase."""

    startup: m.StartupMessage
    client_tls: bool
    reader: asyncio.StreamReader  # upstream
    writer: asyncio.StreamWriter
    upstream_tls: bool = False
    backend_pid: int = 0
    backend_key: bytes = b""
    proxy_key: bytes = b""
    status: bytes = b"I"
    parameters: dict[str, str] = field(default_factory=dict)


class AuthFailure(Exception):
    """The upstream refused the client's credentials (already relayed to the client)."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields.get("M", "authentication failed"))
        self.fields = fields


async def read_frame(reader: asyncio.StreamReader, max_size: int) -> Frame:
    header = await reader.readexactly(5)
    length = INT32.unpack_from(header, 1)[0]
    if length < 4 or length > max_size:
        raise ProtocolViolation(f"invalid message length {length}")
    return Frame(header[:1], await reader.readexactly(length - 4))


async def read_startup_packet(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    length = INT32.unpack(head)[0]
    if head[0] == TLS_RECORD:
        raise FeatureNotSupported("direct TLS connections are not supported; use sslmode")
    if length < 8 or length > MAX_STARTUP:
        raise ProtocolViolation(f"invalid startup packet length {length}")
    return head + await reader.readexactly(length - 4)


async def negotiate(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    tls: ssl.SSLContext | None,
) -> tuple[m.StartupMessage | m.CancelRequest, bool]:
    """Answer SSLRequest/GSSENCRequest until a StartupMessage or CancelRequest arrives."""
    client_tls = False
    while True:
        packet = m.parse_startup(await read_startup_packet(reader))
        if isinstance(packet, m.SSLRequest):
            if client_tls:
                raise ProtocolViolation("SSLRequest inside TLS")
            if tls is None:
                writer.write(b"N")
                continue
            writer.write(b"S")
            await writer.drain()
            # Bytes sent before the handshake would be read as if encrypted
            # (CVE-2021-23214): refuse them.
            if len(getattr(reader, "_buffer", b"")):
                raise ProtocolViolation("data received before the TLS handshake")
            await writer.start_tls(tls)
            client_tls = True
        elif isinstance(packet, m.GSSENCRequest):
            writer.write(b"N")
        else:
            return packet, client_tls


def check_startup(msg: m.StartupMessage) -> None:
    if msg.major != 3:
        raise ProtocolViolation(f"unsupported protocol version {msg.major}.{msg.minor}")
    if "user" not in msg.params:
        raise ProtocolViolation("no PostgreSQL user name specified in startup packet")
    repl = msg.params.get("replication", "false").lower()
    if repl not in ("false", "off", "no", "0"):
        raise FeatureNotSupported("oversight: replication connections are not supported")


async def connect_upstream(
    up: Upstream,
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    msg: m.StartupMessage,
    client_tls: bool,
    *,
    max_message: int,
) -> Handshake:
    """Open the upstream leg and relay authentication until ReadyForQuery."""
    params = {k: v for k, v in msg.params.items() if not k.startswith("_pq_.")}
    unsupported = [k for k in msg.params if k.startswith("_pq_.")]
    if msg.minor > 0 or unsupported:
        # We speak 3.0 both ways: say so once, before anything else.
        client_writer.write(m.negotiate_protocol_version(0, unsupported))
    reader, writer, up_tls = await connect(up)
    hs = Handshake(msg, client_tls, reader, writer, up_tls)
    writer.write(m.startup_message(params))
    user = params["user"]
    while True:
        f = await read_frame(reader, max_message)
        if f.type == b"R":
            code, data = m.parse_auth(f.body)
            if code == m.AUTH_OK:
                client_writer.write(f.raw)
                break
            if code == m.AUTH_SASL:
                mechs = [x for x in m.parse_sasl_mechanisms(data) if not x.endswith("-PLUS")]
                if "SCRAM-SHA-256" not in mechs:
                    raise FeatureNotSupported("upstream offers no usable SASL mechanism")
                if client_tls and up_tls:
                    await _scram_for_client(hs, client_reader, client_writer, user, max_message)
                    continue
                client_writer.write(m.auth_sasl(mechs))
            else:
                client_writer.write(f.raw)
            if code in (m.AUTH_CLEARTEXT, m.AUTH_MD5, m.AUTH_SASL, m.AUTH_SASL_CONTINUE):
                await client_writer.drain()
                reply = await read_frame(client_reader, max_message)
                if reply.type != b"p":
                    raise ProtocolViolation("expected a password message")
                writer.write(reply.raw)
        elif f.type == b"E":
            client_writer.write(f.raw)
            raise AuthFailure(m.error_fields(f.body))
        elif f.type == b"v":
            if not (msg.minor > 0 or unsupported):
                client_writer.write(f.raw)
        else:
            client_writer.write(f.raw)  # NoticeResponse
    # After AuthenticationOk: parameters, the backend key, then ReadyForQuery.
    while True:
        f = await read_frame(reader, max_message)
        if f.type == b"K":
            hs.backend_pid, hs.backend_key = m.parse_backend_key_data(f.body)
            # Keep the real PID (clients show it; pg_stat_activity matches it),
            # swap the secret so only this proxy can cancel this session.
            hs.proxy_key = os.urandom(len(hs.backend_key) or 4)
            client_writer.write(m.backend_key_data(hs.backend_pid, hs.proxy_key))
            continue
        if f.type == b"S":
            k, v = m.parse_parameter_status(f.body)
            hs.parameters[k] = v
        elif f.type == b"Z":
            hs.status = f.body[:1]
        elif f.type == b"E":
            client_writer.write(f.raw)
            raise AuthFailure(m.error_fields(f.body))
        client_writer.write(f.raw)
        if f.type == b"Z":
            return hs


async def _scram_for_client(
    hs: Handshake,
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    user: str,
    max_message: int,
) -> None:
    """Both legs TLS: take the password over the client's TLS, run SCRAM upstream."""
    client_writer.write(m.auth_request(m.AUTH_CLEARTEXT))
    await client_writer.drain()
    reply = await read_frame(client_reader, max_message)
    if reply.type != b"p":
        raise ProtocolViolation("expected a password message")
    password = m.parse_password(reply.body)
    client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
    hs.writer.write(m.sasl_initial_response("SCRAM-SHA-256", client.get_client_first().encode()))
    while True:
        f = await read_frame(hs.reader, max_message)
        if f.type == b"E":
            client_writer.write(f.raw)
            raise AuthFailure(m.error_fields(f.body))
        if f.type != b"R":
            raise ProtocolViolation(f"unexpected {f.type!r} during SCRAM")
        code, data = m.parse_auth(f.body)
        if code == m.AUTH_SASL_CONTINUE:
            client.set_server_first(data.decode())
            hs.writer.write(m.password_message(client.get_client_final().encode()))
        elif code == m.AUTH_SASL_FINAL:
            try:
                client.set_server_final(data.decode())
            except scramp.ScramException as e:
                raise ProxyError("oversight: upstream SCRAM server signature invalid") from e
            return
        else:
            raise ProtocolViolation(f"unexpected authentication request {code} during SCRAM")
