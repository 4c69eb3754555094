"""Reading whole protocol frames from asyncio streams (startup and authentication only).

The relay phase never uses these: its transports get a Protocol that feeds
raw reads to the sans-IO session (connection.py); `take_buffered` hands over
what a stream had read past the last frame startup consumed.
"""

from __future__ import annotations

import asyncio

from proxy.errors import FeatureNotSupported, ProtocolViolation
from proxy.wire import INT32, Frame, startup_length

TLS_RECORD = 0x16


async def read_frame(reader: asyncio.StreamReader, max_size: int) -> Frame:
    header = await reader.readexactly(5)
    length = INT32.unpack_from(header, 1)[0]
    if length < 4 or length > max_size:
        raise ProtocolViolation(f"invalid message length {length}")
    return Frame(header[:1], await reader.readexactly(length - 4))


async def read_startup_packet(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    if head[0] == TLS_RECORD:
        raise FeatureNotSupported("direct TLS needs a TLS certificate configured; use sslmode")
    return head + await reader.readexactly(startup_length(head) - 4)


def take_buffered(reader: asyncio.StreamReader) -> bytes:
    """Empty and return what `reader` holds unread (a client may pipeline its first query).

    StreamReader has no public call for "whatever is buffered, without
    waiting"; its `_buffer` bytearray has been there since Python 3.4.
    """
    buf: bytearray = getattr(reader, "_buffer")  # noqa: B009
    data = bytes(buf)
    buf.clear()
    return data
