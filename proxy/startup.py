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
import hashlib
import os
import ssl
from dataclasses import dataclass, field

import scramp

from proxy import messages as m
from proxy.encodings import ClientEncoding, lookup
from proxy.errors import (
    AuthFailed,
    BadPurpose,
    FeatureNotSupported,
    ProtocolViolation,
    ProxyError,
    UpstreamUnavailable,
)
from proxy.gucs import parse_search_path
from proxy.identity import Identity
from proxy.idsrc import IdentityResolver, IdentityUnavailable
from proxy.login import ProxyLogin, TooManyFailures
from proxy.purpose import problem
from proxy.settings import Upstream
from proxy.streams import read_frame, read_startup_packet
from proxy.textmode import parser_hazard
from proxy.upstream import connect


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
    search_path: tuple[str, ...] | None = None
    purpose: str = ""  # oversight.purpose as the session starts (startup options, role)
    identity: Identity = field(default_factory=Identity)


class AuthFailure(Exception):
    """The upstream refused the client's credentials (already relayed to the client)."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields.get("M", "authentication failed"))
        self.fields = fields


async def negotiate(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    tls: ssl.SSLContext | None,
    direct_tls: bool = False,
) -> tuple[m.StartupMessage | m.CancelRequest, bool]:
    """Answer SSLRequest/GSSENCRequest until a StartupMessage or CancelRequest arrives."""
    client_tls = direct_tls
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
    login: ProxyLogin | None = None,
    identities: IdentityResolver | None = None,
) -> Handshake:
    """Open the upstream leg and authenticate until ReadyForQuery.

    With `login` (proxy auth mode) Oversight checks the client itself and
    logs in upstream as the service account of the upstream URI; otherwise
    the upstream's authentication exchange is relayed.

    A client that hangs up mid-way surfaces as ConnectionResetError (uvloop
    raises RuntimeError on a write to a closed transport), and the upstream
    leg, once opened, is closed on every way out but success, the startup
    timeout's cancellation included, so no idle backend is left behind.

    With `identities`, the user's groups and attributes from the identity
    sources are resolved once the user has authenticated and before
    ReadyForQuery; a source that cannot answer refuses the login (28000,
    raised as AuthFailure so it is audited as one).
    """
    try:
        return await _connect_upstream(
            up,
            client_reader,
            client_writer,
            msg,
            client_tls,
            max_message=max_message,
            login=login,
            identities=identities,
        )
    except RuntimeError as e:
        if client_writer.is_closing():
            raise ConnectionResetError("the client went away during startup") from e
        raise


async def _connect_upstream(
    up: Upstream,
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    msg: m.StartupMessage,
    client_tls: bool,
    *,
    max_message: int,
    login: ProxyLogin | None,
    identities: IdentityResolver | None,
) -> Handshake:
    params = {k: v for k, v in msg.params.items() if not k.startswith("_pq_.")}
    unsupported = [k for k in msg.params if k.startswith("_pq_.")]
    if msg.minor > 0 or unsupported:
        # We speak 3.0 both ways: say so once, before anything else.
        client_writer.write(m.negotiate_protocol_version(0, unsupported))
    user = params["user"]
    identity = Identity()
    if login is not None:
        peer = client_writer.get_extra_info("peername") or ("", 0)
        try:
            identity = await login.authenticate(
                client_reader,
                client_writer,
                user,
                client_ip=str(peer[0]),
                client_tls=client_tls,
                max_message=max_message,
            )
        except (AuthFailed, TooManyFailures, IdentityUnavailable) as e:
            client_writer.write(m.error_response(e.fields()))
            raise AuthFailure(e.fields()) from e
        params["database"] = params.get("database") or user
        params["user"] = up.user
    reader, writer, up_tls = await connect(up)
    try:
        return await _upstream_login(
            Handshake(msg, client_tls, reader, writer, up_tls),
            up,
            client_reader,
            client_writer,
            params,
            max_message=max_message,
            proxy_auth=login is not None,
            identity=identity,
            identities=identities,
        )
    except BaseException:
        writer.close()
        raise


async def _upstream_login(
    hs: Handshake,
    up: Upstream,
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    params: dict[str, str],
    *,
    max_message: int,
    proxy_auth: bool,
    identity: Identity,
    identities: IdentityResolver | None,
) -> Handshake:
    """Log in upstream, relay what the client must see, read up to ReadyForQuery."""
    reader, writer = hs.reader, hs.writer
    writer.write(m.startup_message(params))
    if proxy_auth:
        await _login_as_service(hs, up, max_message)
        client_writer.write(m.auth_request(m.AUTH_OK))
    else:
        await _relay_auth(hs, client_reader, client_writer, max_message)
    hs.identity = identity  # from a token, in proxy auth mode
    if identities is not None:
        try:
            hs.identity = identity.merged(await identities.resolve(hs.startup.params["user"]))
        except IdentityUnavailable as e:
            client_writer.write(m.error_response(e.fields()))
            raise AuthFailure(e.fields()) from e
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
            hazard = parser_hazard(k, v)
            if hazard is not None:  # from PGOPTIONS, or the role's or database's settings
                raise FeatureNotSupported(f"oversight: {hazard}")
        elif f.type == b"Z":
            hs.status = f.body[:1]
        elif f.type == b"E":
            client_writer.write(f.raw)
            raise AuthFailure(m.error_fields(f.body))
        if f.type == b"Z":
            codec = session_codec(hs.parameters)
            if codec is None:  # SQL_ASCII on a database in an encoding it cannot read
                writer.close()
                enc = hs.parameters.get("server_encoding")
                raise FeatureNotSupported(f"oversight: a database in {enc} is not supported")
            # Name resolution needs the session's real search_path (role and
            # database settings apply); ask before the client gets control.
            hs.search_path, hs.purpose = await _show_search_path(hs, max_message, codec)
        client_writer.write(f.raw)
        if f.type == b"Z":
            return hs


def session_codec(parameters: dict[str, str]) -> ClientEncoding | None:
    """The codec for the session's text, from the encodings the server reported."""
    client = parameters.get("client_encoding", "UTF8")
    return lookup(client, parameters.get("server_encoding", "UTF8"))


# The purpose may come from `-c oversight.purpose=...` in the options, or the
# role's or database's settings: the server has parsed them all, so ask it.
# current_setting(..., true) is NULL, not an error, when nothing set it.
_STARTUP_QUERY = "SHOW search_path; SELECT current_setting('oversight.purpose', true)"


async def _show_search_path(
    hs: Handshake, max_message: int, codec: ClientEncoding
) -> tuple[tuple[str, ...] | None, str]:
    """The session's search_path and stated purpose, before the client gets control."""
    hs.writer.write(m.query(_STARTUP_QUERY))
    values: list[str | None] = []
    while True:
        f = await read_frame(hs.reader, max_message)
        if f.type == b"D":
            r = m.Reader(f.body)
            n = r.i32() if r.i16() == 1 else -1
            # In the client encoding, like any result; invalid bytes become U+FFFD.
            values.append(codec.read(r.take(n)) if n >= 0 else None)
        elif f.type == b"Z":
            break
    path_text = values[0] if values else None
    path = None if path_text is None else tuple(parse_search_path(path_text))
    purpose = (values[1] if len(values) > 1 else None) or ""
    why = problem(purpose)
    if why is not None:
        raise BadPurpose(f"{why} (from the startup options or the role's settings)")
    return path, purpose


async def _relay_auth(
    hs: Handshake,
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    max_message: int,
) -> None:
    """Passthrough: relay the upstream's challenge and the client's answers."""
    negotiated = hs.startup.minor > 0 or any(k.startswith("_pq_.") for k in hs.startup.params)
    while True:
        f = await read_frame(hs.reader, max_message)
        if f.type == b"R":
            code, data = m.parse_auth(f.body)
            if code == m.AUTH_OK:
                client_writer.write(f.raw)
                return
            if code == m.AUTH_SASL:
                mechs = [x for x in m.parse_sasl_mechanisms(data) if not x.endswith("-PLUS")]
                if "SCRAM-SHA-256" not in mechs:
                    raise FeatureNotSupported("upstream offers no usable SASL mechanism")
                if hs.client_tls and hs.upstream_tls:
                    password = await _ask_password(client_reader, client_writer, max_message)
                    try:
                        await _scram_upstream(hs, hs.startup.params["user"], password, max_message)
                    except AuthFailure as e:
                        client_writer.write(m.error_response(e.fields))
                        raise
                    continue
                client_writer.write(m.auth_sasl(mechs))
            else:
                client_writer.write(f.raw)
            if code in (m.AUTH_CLEARTEXT, m.AUTH_MD5, m.AUTH_SASL, m.AUTH_SASL_CONTINUE):
                await client_writer.drain()
                reply = await read_frame(client_reader, max_message)
                if reply.type != b"p":
                    raise ProtocolViolation("expected a password message")
                hs.writer.write(reply.raw)
        elif f.type == b"E":
            client_writer.write(f.raw)
            raise AuthFailure(m.error_fields(f.body))
        elif f.type != b"v" or not negotiated:
            client_writer.write(f.raw)  # NoticeResponse, or the upstream's own negotiation


async def _login_as_service(hs: Handshake, up: Upstream, max_message: int) -> None:
    """Proxy auth mode: answer the upstream's challenge with the service account."""
    while True:
        f = await read_frame(hs.reader, max_message)
        if f.type == b"E":
            fields = m.error_fields(f.body)
            raise UpstreamUnavailable(f"service account login failed: {fields.get('M', '')}")
        if f.type != b"R":
            continue
        code, data = m.parse_auth(f.body)
        if code == m.AUTH_OK:
            return
        if code == m.AUTH_CLEARTEXT:
            hs.writer.write(m.password_message(m.cstr(up.password)))
        elif code == m.AUTH_MD5:
            inner = hashlib.md5((up.password + up.user).encode()).hexdigest()
            outer = hashlib.md5(inner.encode() + data[:4]).hexdigest()
            hs.writer.write(m.password_message(m.cstr("md5" + outer)))
        elif code == m.AUTH_SASL:
            await _scram_upstream(hs, up.user, up.password, max_message)
        else:
            raise UpstreamUnavailable(f"unsupported upstream authentication method {code}")


async def _ask_password(
    client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, max_message: int
) -> str:
    client_writer.write(m.auth_request(m.AUTH_CLEARTEXT))
    await client_writer.drain()
    reply = await read_frame(client_reader, max_message)
    if reply.type != b"p":
        raise ProtocolViolation("expected a password message")
    return m.parse_password(reply.body)


async def _scram_upstream(hs: Handshake, user: str, password: str, max_message: int) -> None:
    """Run SCRAM-SHA-256 (no channel binding) with the upstream ourselves."""
    client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
    hs.writer.write(m.sasl_initial_response("SCRAM-SHA-256", client.get_client_first().encode()))
    while True:
        f = await read_frame(hs.reader, max_message)
        if f.type == b"E":
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
