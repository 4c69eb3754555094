"""Alert receivers the tests start: a small HTTP server and a syslog-over-TLS listener.

Both run on the test's event loop (asyncio streams, no web framework) and
keep what they received. `hang=True` makes a receiver accept and then never
answer, as a stuck SIEM would.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class HttpReceiver:
    status: int = 202
    hang: bool = False
    bodies: list[dict[str, Any]] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0
    clients: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> HttpReceiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                if self.hang:
                    await asyncio.Event().wait()  # never answers
                self.bodies.append(orjson.loads(body))
                writer.write(b"HTTP/1.1 %d X\r\ncontent-length: 0\r\n\r\n" % self.status)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for w in self.clients:
            w.close()


@dataclass
class SyslogTlsReceiver:
    """RFC 5425 (octet-counting) syslog over TLS."""

    context: ssl.SSLContext
    messages: list[str] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0
    clients: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> SyslogTlsReceiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.append(writer)
        try:
            while True:
                length = int(await reader.readuntil(b" "))
                self.messages.append((await reader.readexactly(length)).decode())
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for w in self.clients:
            w.close()


def cef_extension(message: str) -> dict[str, str]:
    """The extension of a CEF message as key -> unescaped value (for assertions)."""
    cef = message[message.index("CEF:0|") :]
    # Seven header fields; the header escapes `|`, so split on unescaped ones.
    parts: list[str] = []
    cur, i = "", 0
    while i < len(cef) and len(parts) < 7:
        ch = cef[i]
        if ch == "\\" and i + 1 < len(cef):
            cur += cef[i : i + 2]
            i += 2
            continue
        if ch == "|":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    ext = cef[i:]
    out: dict[str, str] = {}
    key, val, j = "", "", 0
    tokens: list[tuple[str, str]] = []
    while j < len(ext):  # key=value pairs; a value runs until the next ` key=`
        eq = ext.index("=", j)
        key = ext[j:eq]
        k = eq + 1
        val = ""
        while k < len(ext):
            if ext[k] == "\\" and k + 1 < len(ext):
                val += {"n": "\n", "r": "\r"}.get(ext[k + 1], ext[k + 1])
                k += 2
                continue
            if ext[k] == " ":
                rest = ext[k + 1 :]
                nxt = rest.split("=", 1)[0]
                if nxt and " " not in nxt and "\\" not in nxt and "=" in rest:
                    break
            val += ext[k]
            k += 1
        tokens.append((key, val))
        j = k + 1
    out.update(tokens)
    return out
