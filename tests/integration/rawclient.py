"""A minimal raw protocol client for tests that must send what no driver sends."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import scramp

from proxy import messages as m
from proxy.wire import frame


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> Raw:
        return cls(*await asyncio.open_connection(host, port))

    def send(self, data: bytes) -> None:
        self.w.write(data)

    async def frame(self, timeout: float = 10.0) -> tuple[bytes, bytes]:
        head = await asyncio.wait_for(self.r.readexactly(5), timeout)
        (n,) = struct.unpack("!I", head[1:])
        return head[:1], await asyncio.wait_for(self.r.readexactly(n - 4), timeout)

    async def until(self, kind: bytes, timeout: float = 10.0) -> list[tuple[bytes, bytes]]:
        out = []
        while True:
            f = await self.frame(timeout)
            out.append(f)
            if f[0] == kind:
                return out

    async def login(self, user: str, password: str, database: str, **params: str) -> None:
        """Authenticate with SCRAM-SHA-256 and read up to ReadyForQuery."""
        self.send(m.startup_message({"user": user, "database": database, **params}))
        await self.authenticate(user, password)

    async def authenticate(self, user: str, password: str) -> None:
        t, body = await self.frame()
        while t == b"v":
            t, body = await self.frame()
        code, _ = m.parse_auth(body)
        assert (t, code) == (b"R", m.AUTH_SASL), (t, body)
        client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
        self.send(m.sasl_initial_response("SCRAM-SHA-256", client.get_client_first().encode()))
        _, body = await self.frame()
        client.set_server_first(m.parse_auth(body)[1].decode())
        self.send(m.password_message(client.get_client_final().encode()))
        await self.until(b"Z")

    async def query(self, sql: str) -> list[tuple[bytes, bytes]]:
        self.send(m.query(sql))
        return await self.until(b"Z")

    async def read_to_eof(self, timeout: float = 10.0) -> bytes:
        return await asyncio.wait_for(self.r.read(), timeout)

    def close(self) -> None:
        self.w.close()


def bind(portal: str = "", statement: str = "") -> bytes:
    """Bind with no parameters and text results."""
    body = m.cstr(portal) + m.cstr(statement) + struct.pack("!hhh", 0, 0, 0)
    return frame(b"B", body)


def describe(kind: bytes, name: str = "") -> bytes:
    return frame(b"D", kind + m.cstr(name))


SYNC = frame(b"S")


def errors_in(frames: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    return [m.error_fields(b) for t, b in frames if t == b"E"]
