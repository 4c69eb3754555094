"""The guard's Redis store against a real redis-server: shared budgets, history, cancel keys.

Each test module run starts its own redis-server on a free port (no
persistence) and stops it at the end. Two RedisStore objects stand for two
Oversight instances: each has its own client and connection pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fix_guard import RedisServer, Stmt, redis_server

from proxy.errors import Blocked, VolumeLimit
from proxy.guard import Guard, RedisStore, StoreUnavailable
from proxy.guard.store import state_key
from proxy.hooks import StatementResult
from proxy.identity import SessionFacts
from proxy.rules import ExtractionRule, RuleSet, UserEntry

ALICE = SessionFacts(user="alice", database="db")
__all__ = ["redis_server"]  # the fixture, imported from fix_guard


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    a = RedisStore(redis_server.url, retry_interval=0.2)
    b = RedisStore(redis_server.url, retry_interval=0.2)
    yield a, b
    await a.close()
    await b.close()


def ruleset(*entries: dict[str, object]) -> RuleSet:
    return RuleSet(
        users={"alice": UserEntry(groups=["analysts"])},
        extraction=[ExtractionRule.model_validate(e) for e in entries],
    )


def result(rows: int, nbytes: int = 0) -> StatementResult:
    return StatementResult(rows=rows, bytes=nbytes, duration=0.01, error=None, cutoff=False)


async def test_two_instances_enforce_one_row_budget(stores: tuple[RedisStore, RedisStore]) -> None:
    rules = ruleset({"id": "rows", "window": "1h", "max_rows": 1000, "action": "block"})
    guards = [Guard(rules, store) for store in stores]
    total = 0
    wanted = 170  # every statement would return 170 rows if nothing capped it
    refused = 0
    for _ in range(20):
        # both instances admit before either finishes: the race the budget must survive
        adms = await asyncio.gather(*(g.admit(ALICE, [Stmt()]) for g in guards))
        for guard, adm in zip(guards, adms, strict=True):
            if adm.error is not None:
                assert isinstance(adm.error, VolumeLimit)
                refused += 1
                continue
            assert adm.limits is not None and adm.limits.max_rows is not None
            rows = min(wanted, adm.limits.max_rows)  # what the session's cap lets through
            total += rows
            await guard.finished(ALICE, adm.token, result(rows))
    assert refused > 0
    assert 1000 <= total <= 1000 + wanted
    usage = await stores[0].usage(state_key("rows", "alice"), 3600, 0)
    assert usage.rows == total


async def test_query_budget_is_exact_under_concurrency(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    rules = ruleset({"id": "q", "window": "1h", "max_queries": 25, "action": "block"})
    guards = [Guard(rules, store) for store in stores]
    adms = await asyncio.gather(*(guards[i % 2].admit(ALICE, [Stmt()]) for i in range(60)))
    assert sum(a.error is None for a in adms) == 25
    assert all(isinstance(a.error, VolumeLimit) for a in adms if a.error is not None)


async def test_detector_history_is_shared(stores: tuple[RedisStore, RedisStore]) -> None:
    rules = ruleset({"id": "paging", "detect": "paging_scan", "action": "block"})
    guards = [Guard(rules, store) for store in stores]
    for n in range(19):
        stmt = Stmt(has_limit=True, offset=n * 50)
        assert (await guards[n % 2].admit(ALICE, [stmt])).error is None
    adm = await guards[1].admit(ALICE, [Stmt(has_limit=True, offset=19 * 50)])
    assert isinstance(adm.error, Blocked)


async def test_windows_follow_the_injected_clock_when_asked(redis_server: RedisServer) -> None:
    redis_server.flush()
    now = [5_000.0]
    store = RedisStore(redis_server.url, server_time=False)
    guard = Guard(
        ruleset({"id": "q", "window": "1m", "max_queries": 2, "action": "block"}),
        store,
        clock=lambda: now[0],
    )
    try:
        assert (await guard.admit(ALICE, [Stmt()])).error is None
        assert (await guard.admit(ALICE, [Stmt()])).error is None
        assert isinstance((await guard.admit(ALICE, [Stmt()])).error, VolumeLimit)
        now[0] += 62
        assert (await guard.admit(ALICE, [Stmt()])).error is None
    finally:
        await store.close()


async def test_cancel_keys_are_shared(stores: tuple[RedisStore, RedisStore]) -> None:
    a, b = stores
    target = {"host": "10.0.0.5", "port": 5432, "pid": 4242, "secret": 99}
    await a.put_cancel_key((1234, 5678), target, ttl=30)
    await a.put_cancel_key(b"\x01" * 32, {**target, "secret": "ab" * 16}, ttl=30)
    assert await b.get_cancel_key((1234, 5678)) == target
    assert (await b.get_cancel_key(b"\x01" * 32) or {})["secret"] == "ab" * 16
    assert await b.get_cancel_key((1234, 5679)) is None
    # the server's own shape: (pid, proxy secret bytes) -> backend secret bytes
    real = {"host": "127.0.0.1", "port": 5432, "pid": 77, "secret": b"\x00\x01\x02\xff"}
    await a.put_cancel_key((77, b"\xaa\xbb\xcc\xdd"), real, ttl=30)
    assert await b.get_cancel_key((77, b"\xaa\xbb\xcc\xdd")) == real
    assert await b.get_cancel_key((77, b"\xaa\xbb\xcc\xde")) is None
    await b.del_cancel_key((1234, 5678))
    # deleted through b: a's local copy (kept for Redis outages) must not resurrect it
    assert await a.get_cancel_key((1234, 5678)) is None
    await a.put_cancel_key((1, 2), target, ttl=0.05)
    await asyncio.sleep(0.1)
    assert await b.get_cancel_key((1, 2)) is None


async def test_redis_killed_mid_test_degrades_to_per_instance_limits(
    redis_server: RedisServer, stores: tuple[RedisStore, RedisStore]
) -> None:
    a, _ = stores
    guard = Guard(ruleset({"id": "q", "window": "1h", "max_queries": 3, "action": "block"}), a)
    await a.put_cancel_key((7, 8), {"pid": 7}, ttl=60)
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.error is None and {"store": "degraded"} not in adm.hits
    redis_server.stop()
    # per-instance memory takes over: the proxy keeps serving and says so
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.error is None and {"store": "degraded"} in adm.hits
    assert a.degraded
    # the local limit still holds (memory counts from zero: 3 more, then refuse)
    assert (await guard.admit(ALICE, [Stmt()])).error is None
    assert (await guard.admit(ALICE, [Stmt()])).error is None
    assert isinstance((await guard.admit(ALICE, [Stmt()])).error, VolumeLimit)
    # this instance's own sessions can still be cancelled
    assert await a.get_cancel_key((7, 8)) == {"pid": 7}
    # Redis comes back: after the retry interval the shared store is used again
    redis_server.start()
    await asyncio.sleep(0.25)
    adm = await guard.admit(ALICE, [Stmt()])
    assert not a.degraded and {"store": "degraded"} not in adm.hits


async def test_fail_closed_refuses_with_a_clear_error(redis_server: RedisServer) -> None:
    if redis_server.proc is None:
        redis_server.start()
    store = RedisStore(redis_server.url, fail_closed=True, retry_interval=0.2)
    guard = Guard(ruleset({"id": "q", "window": "1h", "max_queries": 100}), store)
    try:
        assert (await guard.admit(ALICE, [Stmt()])).error is None
        redis_server.stop()
        adm = await guard.admit(ALICE, [Stmt()])
        assert isinstance(adm.error, StoreUnavailable)
        assert adm.error.message.startswith("oversight: extraction guard store unavailable")
        assert adm.action == "block"
        # cancel keys never refuse: they fall back to this instance
        await store.put_cancel_key((1, 1), {"pid": 1}, ttl=5)
        assert await store.get_cancel_key((1, 1)) == {"pid": 1}
    finally:
        await store.close()
        redis_server.start()


async def test_cancel_directory_routes_across_instances(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    from proxy.guard import CancelDirectory, CancelTarget

    here, there = (CancelDirectory(s) for s in stores)
    target = CancelTarget("127.0.0.1", 5433, 4711, b"\x12\x34\x56\x78")
    await here.register(4711, b"\xde\xad\xbe\xef", target)
    assert await there.lookup(4711, b"\xde\xad\xbe\xef") == target
    assert await there.lookup(4711, b"\xde\xad\xbe\xee") is None  # a guessed secret finds nothing
    await here.unregister(4711, b"\xde\xad\xbe\xef")
    assert await there.lookup(4711, b"\xde\xad\xbe\xef") is None


async def test_hung_redis_times_out_into_degraded_mode(redis_server: RedisServer) -> None:
    import signal
    import time

    if redis_server.proc is None:
        redis_server.start()
    store = RedisStore(redis_server.url, timeout=0.3, retry_interval=30)
    guard = Guard(ruleset({"id": "q", "window": "1h", "max_queries": 100}), store)
    assert redis_server.proc is not None
    try:
        assert (await guard.admit(ALICE, [Stmt()])).error is None
        redis_server.proc.send_signal(signal.SIGSTOP)  # alive but answering nothing
        t0 = time.monotonic()
        adm = await guard.admit(ALICE, [Stmt()])
        first = time.monotonic() - t0
        assert adm.error is None and {"store": "degraded"} in adm.hits
        assert first < 2.0  # bounded by the socket timeout (and one retry)
        t0 = time.monotonic()
        for _ in range(20):  # while degraded, Redis is not waited for again
            assert (await guard.admit(ALICE, [Stmt()])).error is None
        assert time.monotonic() - t0 < 0.5
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
        await store.close()
