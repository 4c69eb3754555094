"""Sans-IO framing of the PostgreSQL wire protocol.

Theory of operation: after startup every message is a type byte and a
4-byte big-endian length that counts itself but not the type byte. The
proxy never patches byte chunks: it splits the stream into whole frames by
that header, buffers a partial frame until the rest arrives, and passes
frames it does not need to understand through untouched (PgBouncer's
`sbuf.c` works the same way). Only the few messages whose content matters
(Query, Parse, Bind, Execute, ...) are decoded, in `messages.py`.

Startup-phase packets (StartupMessage, SSLRequest, GSSENCRequest,
CancelRequest) have no type byte; `read_startup` frames those.

Nothing here touches a socket: callers feed bytes and take frames out.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from proxy.errors import ProtocolViolation

HEADER = struct.Struct("!cI")
INT32 = struct.Struct("!I")
unpack_len = INT32.unpack_from

# PostgreSQL's own limits: 1 GiB for a message, 10000 bytes for a startup packet
# not counting its 4-byte length word (postmaster.c subtracts it before checking).
DEFAULT_MAX_MESSAGE = 1 << 30
MAX_STARTUP = 10_000 + 4


@dataclass(frozen=True, slots=True)
class Frame:
    """One whole message: its type byte and body; `raw` is the exact wire bytes."""

    type: bytes
    body: bytes

    @property
    def raw(self) -> bytes:
        return HEADER.pack(self.type, len(self.body) + 4) + self.body


def frame(type_: bytes, body: bytes = b"") -> bytes:
    """Encode one typed message."""
    return HEADER.pack(type_, len(body) + 4) + body


class FrameReader:
    """Splits a byte stream of typed messages into frames.

    `max_size` bounds a single message (the declared length is checked as
    soon as the header arrives, so an oversized message is refused before
    its body is buffered).
    """

    __slots__ = ("_buf", "max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes) -> None:
        self._buf += data

    def pending(self) -> int:
        return len(self._buf)

    def take_rest(self) -> bytes:
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        buf = self._buf
        if len(buf) < 5:
            raise StopIteration
        length = unpack_len(buf, 1)[0]
        if length < 4:
            raise ProtocolViolation(f"invalid message length {length}")
        if length > self.max_size:
            raise ProtocolViolation(
                f"message of {length} bytes exceeds the limit of {self.max_size}"
            )
        end = 1 + length
        if len(buf) < end:
            raise StopIteration
        f = Frame(bytes(buf[0:1]), bytes(buf[5:end]))
        del buf[:end]
        return f


def startup_length(head: bytes | bytearray) -> int:
    """The length word of a startup-phase packet, checked against PostgreSQL's limits."""
    length: int = unpack_len(head, 0)[0]
    if length < 8 or length > MAX_STARTUP:
        raise ProtocolViolation(f"invalid startup packet length {length}")
    return length


def read_startup(buf: bytearray) -> bytes | None:
    """Take one untyped startup-phase packet off `buf` (length included), or None if partial."""
    if len(buf) < 4:
        return None
    length = startup_length(buf)
    if len(buf) < length:
        return None
    packet = bytes(buf[:length])
    del buf[:length]
    return packet
