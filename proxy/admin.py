"""The operator's HTTP endpoint: /metrics, /healthz, /readyz and the read-only dashboard.

A deliberately tiny HTTP/1.1 server on asyncio streams (GET and HEAD only,
one request per connection): it serves a handful of fixed paths to
Prometheus, load balancers and a browser, so a framework would add more
surface than it saves.

/metrics, /healthz and /readyz are open, as scrapers and probes expect. The
dashboard and its /api/* JSON show audit data (who ran what, what was
blocked), so they need `Authorization: Bearer <OVERSIGHT_ADMIN_TOKEN>`;
without a configured token they are off and say so. Only the HTML page also
takes `?token=`, so a browser can open it; the page then strips the token
from its address and sends it as a header on every API call.

/api/report/* are the reports over the audit files (proxy/adminreports.py);
the subject search is the one POST, so the value searched for travels in a
body, never in an address.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.resources
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from proxy.address import parse_optional_address
from proxy.adminreports import MAX_BODY, ReportRoutes
from proxy.metrics import METRICS, Metrics
from proxy.reports.api import ReportConfig

MAX_HEAD = 8192
POST_PATHS = frozenset({"/api/report/subject"})
READ_TIMEOUT = 5.0
READY_TIMEOUT = 3.0
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
# The page is self-contained: inline script and style, no third-party origin.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",  # the address may carry ?token=
    "X-Frame-Options": "DENY",
}
DISABLED = (
    "The Oversight dashboard is disabled: set OVERSIGHT_ADMIN_TOKEN to enable it.\n"
    "/metrics, /healthz and /readyz are served without a token.\n"
)


def dashboard_html() -> bytes:
    return importlib.resources.files("proxy").joinpath("dashboard.html").read_bytes()


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.headers = {"Content-Type": ctype, **(headers or {})}

    @classmethod
    def text(cls, status: int, text: str, **headers: str) -> Response:
        return cls(status, text.encode(), "text/plain; charset=utf-8", headers)

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        return cls(status, orjson.dumps(data), "application/json")


class AdminServer:
    """The admin HTTP listener; `listen=""` means off (start() does nothing)."""

    def __init__(
        self,
        listen: str,
        token: str | None,
        ready: Callable[[], Awaitable[bool]],
        metrics: Metrics | None = None,
        reports: ReportConfig | None = None,
    ) -> None:
        self.listen = listen
        self.token = token or None
        self.ready = ready
        self.metrics = metrics or METRICS
        self.reports = ReportRoutes(reports)
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        address = parse_optional_address(self.listen)
        if address is None:
            return
        host, port = address
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    # -- HTTP --------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except asyncio.LimitOverrunError:
                resp = Response.text(431, "request head too large\n")
            else:
                method, target, headers = self._parse(head)
                body = await self._body(reader, method, target, headers)
                resp = (
                    body
                    if isinstance(body, Response)
                    else await self._route(method, target, headers, body)
                )
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        except ValueError:
            resp = Response.text(400, "bad request\n")
        with contextlib.suppress(ConnectionError):
            writer.write(self._serialize(resp, head_only=method == "HEAD"))
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    @staticmethod
    def _parse(head: bytes) -> tuple[str, str, dict[str, str]]:
        if len(head) > MAX_HEAD:
            raise ValueError("head too large")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise ValueError("bad request line")
        headers = {}
        for line in lines[1:]:
            if line:
                name, sep, value = line.partition(":")
                if not sep:
                    raise ValueError("bad header")
                headers[name.strip().lower()] = value.strip()
        return parts[0], parts[1], headers

    @staticmethod
    async def _body(
        reader: asyncio.StreamReader, method: str, target: str, headers: dict[str, str]
    ) -> bytes | Response:
        """The body of a POST to the one path that takes one (small, with a Content-Length)."""
        if method != "POST" or urlsplit(target).path not in POST_PATHS:
            return b""  # a 405 from _route; a body, if any, is never read
        length = headers.get("content-length", "")
        if not length.isdigit():
            return Response.text(411, "a Content-Length is required\n")
        if int(length) > MAX_BODY:
            return Response.text(413, f"the body is limited to {MAX_BODY} bytes\n")
        return await asyncio.wait_for(reader.readexactly(int(length)), READ_TIMEOUT)

    @staticmethod
    def _serialize(resp: Response, head_only: bool) -> bytes:
        lines = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Error')}"]
        headers = {
            **resp.headers,
            "Content-Length": str(len(resp.body)),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Connection": "close",
        }
        lines += [f"{k}: {v}" for k, v in headers.items()]
        out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return out if head_only else out + resp.body

    async def _route(
        self, method: str, target: str, headers: dict[str, str], body: bytes = b""
    ) -> Response:
        url = urlsplit(target)
        path = url.path
        if method == "POST" and path in POST_PATHS:
            denied = self._check_token(headers, None)
            if denied is not None:
                return denied
            status, data = await self.reports.post(path, body)
            return Response.json(data, status)
        if method not in ("GET", "HEAD"):
            return Response.text(405, "only GET and HEAD\n", Allow="GET, HEAD")
        query = parse_qs(url.query)
        if path == "/metrics":
            return Response(200, self.metrics.exposition(), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            return Response.text(200, "ok\n")
        if path == "/readyz":
            return await self._readyz()
        if path in ("/", "/dashboard") or path.startswith("/api/"):
            denied = self._check_token(headers, query if path in ("/", "/dashboard") else None)
            if denied is not None:
                return denied
            if path.startswith("/api/report/"):
                status, data = await self.reports.get(path, query)
                return Response.json(data, status)
            if path.startswith("/api/"):
                return self._api(path, query)
            return Response(200, dashboard_html(), "text/html; charset=utf-8", PAGE_HEADERS)
        return Response.text(404, "not found\n")

    async def _readyz(self) -> Response:
        try:
            ok = await asyncio.wait_for(self.ready(), READY_TIMEOUT)
        except Exception as exc:  # a failing probe means "not ready", whatever it raised
            return Response.text(503, f"not ready: {type(exc).__name__}\n")
        return Response.text(200, "ready\n") if ok else Response.text(503, "not ready\n")

    def _check_token(
        self, headers: dict[str, str], query: dict[str, list[str]] | None
    ) -> Response | None:
        if self.token is None:
            return Response.text(403, DISABLED)
        given = ""
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
        elif query is not None:
            given = query.get("token", [""])[0]
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            return None
        return Response.text(
            401, "a valid bearer token is required\n", **{"WWW-Authenticate": "Bearer"}
        )

    def _api(self, path: str, query: dict[str, list[str]]) -> Response:
        def num(name: str, default: float) -> float:
            try:
                return float(query.get(name, [str(default)])[0])
            except ValueError:
                return default

        m = self.metrics
        if path == "/api/summary":
            return Response.json(m.summary())
        if path == "/api/blocked":
            return Response.json(m.recent("blocked", int(num("after", 0)), int(num("limit", 100))))
        if path == "/api/statements":
            after, limit = int(num("after", 0)), int(num("limit", 100))
            return Response.json(m.recent("statement", after, limit))
        if path == "/api/rows":
            return Response.json(m.rows_by_user(num("hours", 6)))
        if path == "/api/rules":
            top = m.top_rules(int(num("top", 10)))
            return Response.json([{"rule": r, "count": c} for r, c in top])
        return Response.text(404, "no such API\n")
