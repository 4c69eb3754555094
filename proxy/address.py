"""The one parser of listen and connect addresses (`listen`, `admin_listen`, `demo --listen`).

Forms, and nothing else: `host:port`, `[v6]:port`, `:port` (loopback). A bare
host (`0.0.0.0`) or a bare IPv6 address (`::1`) is refused rather than given
a guessed port: an address that means one thing to the settings and another
to the listener is how a proxy ends up half started. Port 0 asks the kernel
for a free port (tests use it). Settings validation calls this, so a bad
value is refused before anything binds; the listeners call it again on the
validated text and cannot disagree.
"""

from __future__ import annotations

import ipaddress
import re

LOOPBACK = "127.0.0.1"
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)


def parse_address(value: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` -> (host, port); ValueError says what is wrong."""
    text = value.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"bad address {value!r}; use [v6]:port")
        port_s = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad host in address {value!r}") from None
    else:
        if text.count(":") > 1:
            raise ValueError(f"bad address {value!r}; write an IPv6 host as [{text}]:port")
        host, colon, port_s = text.partition(":")
        if not colon:
            raise ValueError(f"bad address {value!r}: no port; use host:port or :port")
        host = host or LOOPBACK
        if not _HOSTNAME.match(host):
            raise ValueError(f"bad host in address {value!r}")
    if not port_s.isdigit():
        raise ValueError(f"bad port in address {value!r}")
    port = int(port_s)
    if port > 65535:
        raise ValueError(f"port out of range in address {value!r}")
    return host, port


def parse_optional_address(value: str) -> tuple[str, int] | None:
    """As parse_address, but empty (or blank) means off: None."""
    return parse_address(value) if value.strip() else None
