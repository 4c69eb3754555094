"""Delivery of one rendered alert: HTTP POST (httpx) or syslog over TCP/TLS (asyncio streams).

A sink either returns what the receiver answered ("HTTP 202", "sent 512
bytes") or raises `DeliveryError`; the alerter owns timeouts and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import httpx

from proxy.alerts.alert import Alert
from proxy.alerts.formats import render, syslog_frame
from proxy.rules import AlertRoute

CONTENT_TYPE = {"json": "application/json", "ocsf": "application/json"}


class DeliveryError(Exception):
    pass


def tls_context(ca: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class Sink:
    def __init__(self, route: AlertRoute) -> None:
        self.route = route

    async def send(self, alert: Alert) -> str:
        raise NotImplementedError

    async def close(self) -> None:
        return None

    async def reset(self) -> None:
        """After a timed-out attempt: drop any half-written connection."""
        return None


class WebhookSink(Sink):
    def __init__(self, route: AlertRoute) -> None:
        super().__init__(route)
        assert route.webhook is not None
        self.url = route.webhook
        verify: ssl.SSLContext | bool = tls_context(route.ca) if route.ca else True
        self.client = httpx.AsyncClient(
            timeout=route.timeout, verify=verify, follow_redirects=False, trust_env=False
        )

    async def send(self, alert: Alert) -> str:
        fmt = self.route.fmt
        headers = {"content-type": CONTENT_TYPE.get(fmt, "application/json")}
        try:
            resp = await self.client.post(self.url, content=render(alert, fmt), headers=headers)
        except httpx.HTTPError as e:
            raise DeliveryError(f"{type(e).__name__}: {e}".rstrip(": ")) from None
        if not 200 <= resp.status_code < 300:
            raise DeliveryError(f"HTTP {resp.status_code}")
        return f"HTTP {resp.status_code}"

    async def close(self) -> None:
        await self.client.aclose()


class SyslogSink(Sink):
    """One connection kept open and reopened after any error."""

    def __init__(self, route: AlertRoute) -> None:
        super().__init__(route)
        assert route.syslog is not None
        scheme, rest = route.syslog.split("://", 1)
        host, port = rest.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.tls = tls_context(route.ca) if scheme == "tcp+tls" else None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, alert: Alert) -> str:
        frame = syslog_frame(render(alert, "cef").decode("utf-8"))
        try:
            if self._writer is None or self._writer.is_closing():
                _, self._writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                )
            self._writer.write(frame)
            await self._writer.drain()
        except (OSError, ssl.SSLError) as e:
            await self.close()
            raise DeliveryError(f"{type(e).__name__}: {e}") from None
        return f"sent {len(frame)} bytes"

    async def reset(self) -> None:
        await self.close()

    async def close(self) -> None:
        w, self._writer = self._writer, None
        if w is not None:
            w.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(w.wait_closed(), 1.0)


def make_sink(route: AlertRoute) -> Sink:
    return WebhookSink(route) if route.webhook is not None else SyslogSink(route)
