"""The few PostgreSQL messages Oversight decodes or builds.

Everything else crosses the proxy as raw frames (see `wire.py`). Decoders
are defensive: a malformed body raises ProtocolViolation, never IndexError.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from proxy.errors import ProtocolViolation
from proxy.wire import frame

I16 = struct.Struct("!h")
I32 = struct.Struct("!i")
U32 = struct.Struct("!I")

PROTOCOL_3_0 = 196608  # 3 << 16
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


class Reader:
    """Cursor over a message body with bounds-checked reads."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def cstr(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolViolation("unterminated string in message")
        s = self.data[self.pos : end].decode("utf-8", "surrogateescape")
        self.pos = end + 1
        return s

    def raw_cstr(self) -> bytes:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolViolation("unterminated string in message")
        s = self.data[self.pos : end]
        self.pos = end + 1
        return s

    def _unpack(self, st: struct.Struct) -> int:
        if self.pos + st.size > len(self.data):
            raise ProtocolViolation("message too short")
        (v,) = st.unpack_from(self.data, self.pos)
        self.pos += st.size
        return int(v)

    def i16(self) -> int:
        return self._unpack(I16)

    def i32(self) -> int:
        return self._unpack(I32)

    def u32(self) -> int:
        return self._unpack(U32)

    def byte(self) -> bytes:
        if self.pos >= len(self.data):
            raise ProtocolViolation("message too short")
        b = self.data[self.pos : self.pos + 1]
        self.pos += 1
        return b

    def rest(self) -> bytes:
        r = self.data[self.pos :]
        self.pos = len(self.data)
        return r

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolViolation("message too short")
        r = self.data[self.pos : self.pos + n]
        self.pos += n
        return r


Decode = Callable[[bytes], str]  # statement text from the client encoding
Encode = Callable[[str], bytes]  # and back


def _utf8(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def cstr(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape") + b"\0"


# ---------------------------------------------------------------- startup phase


@dataclass(frozen=True, slots=True)
class StartupMessage:
    version: int
    params: dict[str, str]

    @property
    def major(self) -> int:
        return self.version >> 16

    @property
    def minor(self) -> int:
        return self.version & 0xFFFF


@dataclass(frozen=True, slots=True)
class CancelRequest:
    pid: int
    key: bytes  # 4 bytes under 3.0; up to 256 under 3.2


@dataclass(frozen=True, slots=True)
class SSLRequest:
    pass


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    pass


StartupPacket = StartupMessage | CancelRequest | SSLRequest | GSSENCRequest


def parse_startup(packet: bytes) -> StartupPacket:
    """Decode an untyped startup-phase packet (length prefix included)."""
    r = Reader(packet, 4)
    code = r.i32() & 0xFFFFFFFF
    if code == SSL_REQUEST and len(packet) == 8:
        return SSLRequest()
    if code == GSSENC_REQUEST and len(packet) == 8:
        return GSSENCRequest()
    if code == CANCEL_REQUEST:
        pid = r.i32()
        key = r.rest()
        if not 4 <= len(key) <= 256:
            raise ProtocolViolation("invalid cancel request key")
        return CancelRequest(pid, key)
    if code >> 16 != 3:
        raise ProtocolViolation(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
    params: dict[str, str] = {}
    while True:
        name = r.cstr()
        if not name:
            break
        params[name] = r.cstr()
    return StartupMessage(code, params)


def startup_message(params: dict[str, str], version: int = PROTOCOL_3_0) -> bytes:
    body = I32.pack(version) + b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\0"
    return I32.pack(len(body) + 4) + body


def cancel_request(pid: int, key: bytes) -> bytes:
    body = I32.pack(CANCEL_REQUEST) + I32.pack(pid) + key
    return I32.pack(len(body) + 4) + body


SSL_REQUEST_BYTES = I32.pack(8) + I32.pack(SSL_REQUEST)


def negotiate_protocol_version(minor: int, unsupported: list[str]) -> bytes:
    body = I32.pack(minor) + I32.pack(len(unsupported)) + b"".join(cstr(o) for o in unsupported)
    return frame(b"v", body)


# ---------------------------------------------------------------- authentication


def auth_request(code: int, data: bytes = b"") -> bytes:
    return frame(b"R", I32.pack(code) + data)


def auth_sasl(mechanisms: list[str]) -> bytes:
    return auth_request(AUTH_SASL, b"".join(cstr(m) for m in mechanisms) + b"\0")


def parse_auth(body: bytes) -> tuple[int, bytes]:
    r = Reader(body)
    return r.i32(), r.rest()


def parse_sasl_mechanisms(data: bytes) -> list[str]:
    r = Reader(data)
    out = []
    while r.pos < len(data):
        m = r.cstr()
        if not m:
            break
        out.append(m)
    return out


def password_message(data: bytes) -> bytes:
    return frame(b"p", data)


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    return frame(b"p", cstr(mechanism) + I32.pack(len(data)) + data)


def parse_password(body: bytes) -> str:
    return Reader(body).cstr()


def backend_key_data(pid: int, key: bytes) -> bytes:
    return frame(b"K", I32.pack(pid) + key)


def parse_backend_key_data(body: bytes) -> tuple[int, bytes]:
    r = Reader(body)
    return r.i32(), r.rest()


def parse_parameter_status(body: bytes) -> tuple[str, str]:
    r = Reader(body)
    return r.cstr(), r.cstr()


# ---------------------------------------------------------------- simple and extended query


def parse_query(body: bytes, decode: Decode = _utf8) -> str:
    return decode(Reader(body).raw_cstr())


def query(sql: str | bytes) -> bytes:
    """A Query; `sql` as text (UTF-8) or already in the client encoding."""
    return frame(b"Q", sql + b"\0" if isinstance(sql, bytes) else cstr(sql))


@dataclass(frozen=True, slots=True)
class Parse:
    name: str
    sql: str
    param_types: tuple[int, ...]


def parse_parse(body: bytes, decode: Decode = _utf8) -> Parse:
    r = Reader(body)
    name, sql = r.cstr(), decode(r.raw_cstr())
    n = r.i16()
    if n < 0:
        raise ProtocolViolation("negative parameter count in Parse")
    return Parse(name, sql, tuple(r.u32() for _ in range(n)))  # type OIDs are unsigned


def parse(name: str, sql: str | bytes, param_types: tuple[int, ...] = ()) -> bytes:
    """A Parse; `sql` as text (UTF-8) or already in the client encoding."""
    text = sql + b"\0" if isinstance(sql, bytes) else cstr(sql)
    body = cstr(name) + text + I16.pack(len(param_types))
    body += b"".join(U32.pack(t) for t in param_types)
    return frame(b"P", body)


def parse_bind_names(body: bytes) -> tuple[str, str]:
    """Portal and statement names of a Bind; the rest of the body is relayed untouched."""
    r = Reader(body)
    return r.cstr(), r.cstr()


def parse_bind_params(body: bytes, decode: Decode | None = None) -> tuple[str, ...]:
    """Parameter values of a Bind as text: binary ones as `\\x` hex, NULL as ``.

    `decode` reads text-format values from the client encoding (UTF-8 by default).
    """
    r = Reader(body)
    r.cstr(), r.cstr()
    formats = [r.i16() for _ in range(max(r.i16(), 0))]
    out = []
    for i in range(max(r.i16(), 0)):
        n = r.i32()
        if n < 0:
            out.append("")
            continue
        value = r.take(n)
        fmt = formats[i] if len(formats) > 1 else formats[0] if formats else 0
        if fmt:
            out.append("\\x" + value.hex())
        else:
            out.append(decode(value) if decode else value.decode("utf-8", "replace"))
    return tuple(out)


def parse_execute(body: bytes) -> tuple[str, int]:
    r = Reader(body)
    return r.cstr(), r.i32()


def execute(portal: str, max_rows: int = 0) -> bytes:
    return frame(b"E", cstr(portal) + I32.pack(max_rows))


def parse_target(body: bytes) -> tuple[bytes, str]:
    """Describe and Close: kind byte (S statement, P portal) and name."""
    r = Reader(body)
    kind = r.byte()
    if kind not in (b"S", b"P"):
        raise ProtocolViolation(f"invalid Describe/Close target {kind!r}")
    return kind, r.cstr()


def ready_for_query(status: bytes) -> bytes:
    return frame(b"Z", status)


def command_complete(tag: str) -> bytes:
    return frame(b"C", cstr(tag))


# ---------------------------------------------------------------- errors and notices


def error_fields(body: bytes, decode: Decode | None = None) -> dict[str, str]:
    """Decode ErrorResponse/NoticeResponse fields; tolerant of a missing terminator.

    The server writes them in the client encoding: `decode` reads it (UTF-8 by default).
    """
    out: dict[str, str] = {}
    pos, n = 0, len(body)
    while pos < n and body[pos] != 0:
        code = chr(body[pos])
        end = body.find(b"\0", pos + 1)
        if end < 0:
            end = n
        value = body[pos + 1 : end]
        out[code] = decode(value) if decode else value.decode("utf-8", "replace")
        pos = end + 1
    return out


def error_response(
    fields: dict[str, str], *, notice: bool = False, encode: Encode | None = None
) -> bytes:
    """ErrorResponse (or NoticeResponse); `encode` writes the text in the client encoding."""
    enc = encode or (lambda v: v.encode("utf-8", "surrogateescape"))
    body = b"".join(k.encode() + enc(v) + b"\0" for k, v in fields.items()) + b"\0"
    return frame(b"N" if notice else b"E", body)
