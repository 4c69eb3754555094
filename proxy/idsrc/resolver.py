"""Merging and caching the identity sources' answers (see the package docstring)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from proxy.errors import ProxyError
from proxy.identity import Identity

log = logging.getLogger("oversight.identity")


class IdentityUnavailable(ProxyError):
    """A source could not say who the user is; the login is refused, never let in short."""

    sqlstate = "28000"
    severity = "FATAL"


# A source: user name in, Identity out; raises on any failure (timeouts are the caller's).
Lookup = Callable[[str], Awaitable[Identity]]


@dataclass(frozen=True, slots=True)
class Source:
    name: str  # "roles", "ldap": shown in errors and by `oversight identity`
    lookup: Lookup


class IdentityResolver:
    """Every configured source's answer for a user, merged and cached.

    The cache holds an answer for `ttl` seconds; after that the sources are
    asked again, and if one cannot answer the login is refused (serving an
    expired answer could keep a revoked group alive past the promised
    lifetime). Concurrent logins of one user share one lookup.
    """

    def __init__(self, sources: list[Source], *, ttl: float, timeout: float) -> None:
        self.sources = sources
        self.ttl = ttl
        self.timeout = timeout
        self._cache: dict[str, tuple[float, Identity]] = {}
        self._pending: dict[str, asyncio.Future[Identity]] = {}

    async def resolve(self, user: str) -> Identity:
        now = time.monotonic()
        hit = self._cache.get(user)
        if hit is not None and hit[0] > now:
            return hit[1]
        pending = self._pending.get(user)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Identity] = asyncio.get_running_loop().create_future()
        self._pending[user] = fut
        try:
            ident = await self._ask_all(user)
        except BaseException as e:
            if not isinstance(e, Exception):  # cancelled: the waiters are refused, not stuck
                e = IdentityUnavailable("oversight: identity lookup interrupted; login refused")
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters get it, nobody logs it as unhandled
            raise
        finally:
            self._pending.pop(user, None)
        fut.set_result(ident)
        if self.ttl > 0:
            self._cache[user] = (time.monotonic() + self.ttl, ident)
            if len(self._cache) > 100_000:  # bound memory under a flood of distinct names
                self._prune(time.monotonic())
        return ident

    async def _ask_all(self, user: str) -> Identity:
        merged = Identity()
        for src in self.sources:
            try:
                got = await asyncio.wait_for(src.lookup(user), self.timeout)
            except TimeoutError:
                raise IdentityUnavailable(
                    f"oversight: identity source {src.name} did not answer in "
                    f"{self.timeout:g}s; login refused"
                ) from None
            except IdentityUnavailable:
                raise
            except Exception as e:
                log.warning("identity source %s failed for %r: %s", src.name, user, _safe(e))
                raise IdentityUnavailable(
                    f"oversight: identity source {src.name} is unavailable; login refused",
                    detail=f"{type(e).__name__}",
                ) from None
            merged = merged.merged(got)
        return merged

    def forget(self, user: str | None = None) -> None:
        """Drop cached answers (all, or one user's)."""
        if user is None:
            self._cache.clear()
        else:
            self._cache.pop(user, None)

    def _prune(self, now: float) -> None:
        self._cache = {u: e for u, e in self._cache.items() if e[0] > now}
        while len(self._cache) > 50_000:
            self._cache.pop(next(iter(self._cache)))


def _safe(e: Exception) -> str:
    """An error's text for the log; sources must not put secrets in theirs (they do not)."""
    return f"{type(e).__name__}: {str(e)[:200]}"
