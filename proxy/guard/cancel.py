"""Cancel routing across instances: which upstream backend a client's cancel key belongs to.

Behind a TCP load balancer, a client's CancelRequest opens a new connection
that may land on another Oversight instance than its session. Each instance
registers its sessions' keys in the shared Store; an instance that gets a
CancelRequest for a key it does not hold looks it up there and sends the
cancel to the right postmaster with the real backend secret. The client
only ever sees the proxy's secret, so the lookup is the only way in.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.guard.store import Store

# Sessions are unregistered on disconnect; the TTL only bounds what a crashed
# instance leaves behind (random keys nobody can guess, so stale ones are harmless).
DEFAULT_TTL = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class CancelTarget:
    host: str
    port: int
    pid: int
    secret: bytes


class CancelDirectory:
    """Registers, finds and forgets (pid, proxy secret) -> upstream backend."""

    def __init__(self, store: Store, *, ttl: float = DEFAULT_TTL) -> None:
        self.store = store
        self.ttl = ttl

    async def register(self, pid: int, proxy_key: bytes, target: CancelTarget) -> None:
        await self.store.put_cancel_key(
            (pid, proxy_key),
            {"host": target.host, "port": target.port, "pid": target.pid, "secret": target.secret},
            self.ttl,
        )

    async def unregister(self, pid: int, proxy_key: bytes) -> None:
        await self.store.del_cancel_key((pid, proxy_key))

    async def lookup(self, pid: int, proxy_key: bytes) -> CancelTarget | None:
        found = await self.store.get_cancel_key((pid, proxy_key))
        if found is None:
            return None
        try:
            secret = found["secret"]
            return CancelTarget(
                str(found["host"]),
                int(found["port"]),
                int(found["pid"]),
                secret if isinstance(secret, bytes) else int(secret).to_bytes(4, "big"),
            )
        except (KeyError, TypeError, ValueError):
            return None  # written by something else; never cancel on a guess
