"""The shared guard store: budgets, history and cancel keys in Redis for several instances.

Every budget check-and-count is one Lua script, so instances racing on the
last unit of a budget are serialized by Redis. Time comes from the Redis
server (`TIME`) by default: every instance then cuts windows on one clock,
whatever its own monotonic clock says. A test may pass `server_time=False`
to drive windows with the guard's injected clock instead.

When Redis cannot be reached the store logs it once, reports `degraded`
(the guard flags it in the audit) and serves from a per-instance
MemoryStore, retrying Redis every `retry_interval` seconds. With
`fail_closed=True` it raises StoreUnavailable instead, and the statement is
refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.guard.store import (
    MAX_MEMBERS,
    BudgetLimits,
    CancelKey,
    StoreUnavailable,
    Usage,
    cancel_key_name,
    decode_target,
    encode_target,
)
from proxy.guard.store_memory import MemoryStore
from proxy.guard.windows import bucket_ms, coverage_bucket_ms

log = logging.getLogger("oversight.guard")

T = TypeVar("T")

# Keep in step with windows.py: buckets keyed by start ms; a bucket counts while it
# overlaps the window. ARGV: window_ms, width_ms, now_ms (-1: server time), mode, ...
_NOW = """
local now = tonumber(ARGV[3])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window, width = tonumber(ARGV[1]), tonumber(ARGV[2])
local start = string.format('%d', now - now % width)
"""

_BUDGET = (
    _NOW
    + """
local mode = ARGV[4]
if mode == 'add' then
  redis.call('HINCRBY', KEYS[1], 'r:' .. start, tonumber(ARGV[5]))
  redis.call('HINCRBY', KEYS[1], 'b:' .. start, tonumber(ARGV[6]))
  redis.call('PEXPIRE', KEYS[1], window + width)
end
local q, r, b = 0, 0, 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local f = all[i]
  local s = tonumber(string.sub(f, 3))
  if s + width > now - window then
    local kind, v = string.sub(f, 1, 1), tonumber(all[i + 1])
    if kind == 'q' then q = q + v elseif kind == 'r' then r = r + v else b = b + v end
  elseif mode ~= 'read' then
    redis.call('HDEL', KEYS[1], f)
  end
end
if mode ~= 'admit' then return {1, q, r, b} end
local maxq, maxr, maxb = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local n = tonumber(ARGV[9])
if ARGV[8] == '1' and ((maxq >= 0 and q + n > maxq) or (maxr >= 0 and r >= maxr)
    or (maxb >= 0 and b >= maxb)) then
  return {0, q, r, b}
end
redis.call('HINCRBY', KEYS[1], 'q:' .. start, n)
redis.call('PEXPIRE', KEYS[1], window + width)
return {1, q, r, b}
"""
)

# ARGV: window_ms, width_ms (unused), now_ms, member, max_members
_SEEN = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
local cap = tonumber(ARGV[5])
if n > cap then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1)
  n = cap
end
redis.call('PEXPIRE', KEYS[1], window)
return n
"""
)

# First sightings (restricted subjects): a sorted set of member -> last seen, as _SEEN.
# ARGV: window_ms, width_ms (unused), now_ms, max_members, members...
_FIRST = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local new = {}
for i = 5, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then new[#new + 1] = ARGV[i] end
  redis.call('ZADD', KEYS[1], now, ARGV[i])
end
local n = redis.call('ZCARD', KEYS[1])
local cap = tonumber(ARGV[4])
if n > cap then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1)
  n = cap
end
if #ARGV >= 5 then redis.call('PEXPIRE', KEYS[1], window) end
return {n, new}
"""
)

# Coverage: one HyperLogLog per bucket, named KEYS[1] .. ':' .. bucket start, so one
# statement's members are one PFADD and the count one PFCOUNT over the live buckets
# (their union). KEYS[1] carries a {hash tag}: every bucket lives in its slot.
# ARGV: window_ms, width_ms, now_ms, members...
_COVER = (
    _NOW
    + """
if #ARGV >= 4 then
  local cur = KEYS[1] .. ':' .. start
  for i = 4, #ARGV, 1000 do
    redis.call('PFADD', cur, unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
  redis.call('PEXPIRE', cur, window + width)
end
local names = {}
local s = now - window
s = s - s % width
while s <= now do
  names[#names + 1] = KEYS[1] .. ':' .. string.format('%d', s)
  s = s + width
end
return redis.call('PFCOUNT', unpack(names))
"""
)

_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)


def _limit(value: int | None) -> int:
    return -1 if value is None else value


class RedisStore:
    """Store shared through Redis, with a per-instance fallback while Redis is down."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "oversight",
        fail_closed: bool = False,
        server_time: bool = True,
        timeout: float = 1.0,
        retry_interval: float = 5.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.fail_closed = fail_closed
        self.server_time = server_time
        self.retry_interval = retry_interval
        self._redis = aioredis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self._budget = self._redis.register_script(_BUDGET)
        self._seen = self._redis.register_script(_SEEN)
        self._first = self._redis.register_script(_FIRST)
        self._cover = self._redis.register_script(_COVER)
        self._fallback = MemoryStore()
        self._down_since: float | None = None
        self._last_try = 0.0

    @property
    def degraded(self) -> bool:
        return self._down_since is not None

    def _k(self, kind: str, key: str) -> str:
        return f"{self.prefix}:{kind}:{key}"

    def _now_ms(self, now: float) -> int:
        return -1 if self.server_time else int(now * 1000)

    async def _run(
        self,
        op: Callable[[], Awaitable[T]],
        fallback: Callable[[], Awaitable[T]],
        *,
        may_refuse: bool = True,
    ) -> T:
        """Run `op` against Redis; on a connection failure degrade (or refuse) and use memory.

        Cancel keys never refuse (`may_refuse=False`): a cancel that reaches only
        this instance's sessions is still better than none.
        """
        refuse = self.fail_closed and may_refuse
        mono = time.monotonic()
        if self._down_since is not None and mono - self._last_try < self.retry_interval:
            if refuse:
                raise StoreUnavailable(f"redis at {self._safe_url()} is unreachable")
            return await fallback()
        self._last_try = mono
        try:
            result = await op()
        except _DOWN as exc:
            if self._down_since is None:
                self._down_since = mono
                log.error(
                    "guard store: redis at %s unreachable (%s); %s",
                    self._safe_url(),
                    exc,
                    "refusing statements" if self.fail_closed else "using per-instance limits",
                )
            if refuse:
                raise StoreUnavailable(f"redis at {self._safe_url()} is unreachable") from exc
            return await fallback()
        if self._down_since is not None:
            log.warning(
                "guard store: redis at %s reachable again after %.1fs; shared limits resume",
                self._safe_url(),
                mono - self._down_since,
            )
            self._down_since = None
        return result

    def _safe_url(self) -> str:
        # Never log a password that may sit in the URL.
        _, sep, tail = self.url.rpartition("@")
        return f"{self.url.split('://', 1)[0]}://***@{tail}" if sep else self.url

    async def admit(
        self,
        key: str,
        window: float,
        now: float,
        limits: BudgetLimits,
        *,
        enforce: bool,
        queries: int = 1,
    ) -> tuple[bool, Usage]:
        async def op() -> tuple[bool, Usage]:
            res = await self._budget(
                keys=[self._k("budget", key)],
                args=[
                    int(window * 1000),
                    bucket_ms(window),
                    self._now_ms(now),
                    "admit",
                    _limit(limits.max_queries),
                    _limit(limits.max_rows),
                    _limit(limits.max_bytes),
                    "1" if enforce else "0",
                    queries,
                ],
            )
            return bool(int(res[0])), Usage(int(res[1]), int(res[2]), int(res[3]))

        return await self._run(
            op,
            lambda: self._fallback.admit(
                key, window, now, limits, enforce=enforce, queries=queries
            ),
        )

    async def add(self, key: str, window: float, now: float, rows: int, nbytes: int) -> Usage:
        async def op() -> Usage:
            res = await self._budget(
                keys=[self._k("budget", key)],
                args=[
                    int(window * 1000),
                    bucket_ms(window),
                    self._now_ms(now),
                    "add",
                    rows,
                    nbytes,
                ],
            )
            return Usage(int(res[1]), int(res[2]), int(res[3]))

        return await self._run(op, lambda: self._fallback.add(key, window, now, rows, nbytes))

    async def usage(self, key: str, window: float, now: float) -> Usage:
        async def op() -> Usage:
            res = await self._budget(
                keys=[self._k("budget", key)],
                args=[int(window * 1000), bucket_ms(window), self._now_ms(now), "read"],
            )
            return Usage(int(res[1]), int(res[2]), int(res[3]))

        return await self._run(op, lambda: self._fallback.usage(key, window, now))

    async def seen(self, key: str, member: str, window: float, now: float) -> int:
        async def op() -> int:
            res = await self._seen(
                keys=[self._k("seen", key)],
                args=[int(window * 1000), 0, self._now_ms(now), member, MAX_MEMBERS],
            )
            return int(res)

        return await self._run(op, lambda: self._fallback.seen(key, member, window, now))

    async def first_seen(
        self, key: str, members: Sequence[str], window: float, now: float
    ) -> tuple[int, list[str]]:
        unique = list(dict.fromkeys(members))

        async def op() -> tuple[int, list[str]]:
            res = await self._first(
                keys=[self._k("first", key)],
                args=[int(window * 1000), 0, self._now_ms(now), MAX_MEMBERS, *unique],
            )
            return int(res[0]), [m.decode() if isinstance(m, bytes) else str(m) for m in res[1]]

        return await self._run(op, lambda: self._fallback.first_seen(key, unique, window, now))

    async def cover(self, key: str, members: Sequence[str], window: float, now: float) -> int:
        async def op() -> int:
            res = await self._cover(
                keys=[self._k("cover", "{" + key + "}")],
                args=[
                    int(window * 1000),
                    coverage_bucket_ms(window),
                    self._now_ms(now),
                    *members,
                ],
            )
            return int(res)

        return await self._run(op, lambda: self._fallback.cover(key, members, window, now))

    async def put_cancel_key(self, key: CancelKey, target: dict[str, Any], ttl: float) -> None:
        name = self._k("cancel", cancel_key_name(key))

        async def op() -> None:
            blob = orjson.dumps(encode_target(target))
            await self._redis.set(name, blob, px=max(int(ttl * 1000), 1))

        # Keep a local copy too: a session's own instance still finds it if Redis dies later.
        await self._fallback.put_cancel_key(key, target, ttl)
        await self._run(op, _noop, may_refuse=False)

    async def get_cancel_key(self, key: CancelKey) -> dict[str, Any] | None:
        name = self._k("cancel", cancel_key_name(key))

        async def op() -> dict[str, Any] | None:
            raw = await self._redis.get(name)
            if raw is None:  # deleted or expired everywhere; the local copy is stale
                return None
            return decode_target(orjson.loads(raw))

        return await self._run(op, lambda: self._fallback.get_cancel_key(key), may_refuse=False)

    async def del_cancel_key(self, key: CancelKey) -> None:
        name = self._k("cancel", cancel_key_name(key))

        async def op() -> None:
            await self._redis.delete(name)

        await self._fallback.del_cancel_key(key)
        await self._run(op, _noop, may_refuse=False)

    async def ping(self) -> bool:
        """Reachability for /readyz; does not change the degraded state."""
        try:
            return bool(await self._redis.ping())
        except _DOWN:
            return False

    async def close(self) -> None:
        await self._redis.aclose()


async def _noop() -> None:
    return None
