"""The ledger detectors' history in Redis (real redis-server): shared by instances, bounded.

Two RedisStore objects stand for two Oversight instances. Windows are driven
by the guard's clock (`server_time=False`) where a test moves time.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from fix_guard import RedisServer, Stmt, redis_server

from proxy.errors import Blocked
from proxy.guard import Guard, MemoryStore, RedisStore
from proxy.guard.store import MAX_MEMBERS
from proxy.guard.windows import COVERAGE_BUCKETS
from proxy.hooks import StatementResult
from proxy.identity import SessionFacts
from proxy.ledger.hashing import subject_hash
from proxy.ledger.tally import Tally
from proxy.rules import ExtractionRule, RuleSet, UserEntry
from proxy.rules.subjects import SubjectRule

ALICE = SessionFacts(user="alice", database="db")
KEY = b"ledger-redis"
__all__ = ["redis_server"]  # the fixture, imported from fix_guard


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    a = RedisStore(redis_server.url, server_time=False)
    b = RedisStore(redis_server.url, server_time=False)
    yield a, b
    await a.close()
    await b.close()


def hashes(n: int, start: int = 0) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(start, start + n)]


def ruleset(*entries: dict[str, Any]) -> RuleSet:
    return RuleSet(
        users={"alice": UserEntry(groups=["analysts"])},
        extraction=[ExtractionRule.model_validate(e) for e in entries],
        subjects=[SubjectRule(id="person", table="public.people", key="id")],
    )


def finished(subjects: Tally) -> StatementResult:
    return StatementResult(1, 10, 0.01, None, False, subjects)


async def test_first_sightings_are_shared_and_slide(stores: tuple[RedisStore, RedisStore]) -> None:
    a, b = stores
    assert await a.first_seen("k", [], 60, 100.0) == (0, [])
    assert await a.first_seen("k", ["x", "y", "x"], 60, 100.0) == (2, ["x", "y"])
    assert await b.first_seen("k", ["y", "z"], 60, 130.0) == (3, ["z"])  # the other instance
    assert await b.first_seen("k", [], 60, 159.0) == (3, [])
    assert await a.first_seen("k", ["x", "y"], 60, 160.0) == (3, ["x"])  # x left at 160


async def test_first_sightings_are_bounded(stores: tuple[RedisStore, RedisStore]) -> None:
    a, _ = stores
    members = [f"m{i}" for i in range(MAX_MEMBERS + 5)]
    count, new = await a.first_seen("k", members, 60, 1.0)
    assert count == MAX_MEMBERS and len(new) == MAX_MEMBERS + 5


async def test_coverage_is_a_union_across_instances_and_buckets(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    a, b = stores
    window = 1200.0  # buckets of 100 s
    assert await a.cover("k", [], window, 0.0) == 0
    assert await a.cover("k", hashes(30), window, 0.0) == 30
    assert await b.cover("k", hashes(30, 20), window, 600.0) == 50
    assert await a.cover("k", [], window, 1299.0) == 50
    assert await b.cover("k", [], window, 1300.0) == 30
    assert await a.cover("k", [], window, 1900.0) == 0


async def test_coverage_agrees_with_the_memory_store_and_stays_bounded(
    stores: tuple[RedisStore, RedisStore], redis_server: RedisServer
) -> None:
    a, _ = stores
    memory = MemoryStore()
    window, now = 86400.0 * 7, 0.0
    for start in range(0, 60_000, 1000):  # 60 statements of 1,000 people each, over a week
        members = hashes(1000, start)
        got = await a.cover("k", members, window, now)
        want = await memory.cover("k", members, window, now)
        now += 7200
    assert abs(got - 60_000) < 60_000 * 0.03 and abs(want - 60_000) < 60_000 * 0.03
    assert abs(got - want) < 60_000 * 0.02
    with redis.Redis(host="127.0.0.1", port=redis_server.port) as client:
        names = list(client.scan_iter("oversight:cover:*"))
        assert 1 < len(names) <= COVERAGE_BUCKETS + 1
        assert all(int(client.memory_usage(n) or 0) < 20_000 for n in names)  # a sketch each
        assert all(int(client.pttl(n)) > 0 for n in names)  # they expire on their own


async def test_restricted_block_on_one_instance_refuses_on_the_other(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    now = [10_000.0]
    rules = ruleset(
        {
            "id": "vip",
            "detect": "restricted_lookup",
            "subject": "person",
            "keys": [7],
            "action": "block",
            "window": "1h",
        }
    )
    one, two = (Guard(rules, s, clock=lambda: now[0], ledger_key=KEY) for s in stores)
    adm = await one.admit(ALICE, [Stmt()])
    tally = Tally()
    tally.looked_up("person", "id", subject_hash(KEY, "person", "7"))
    (hit,) = await one.finished(ALICE, adm.token, finished(tally))
    assert hit["detector"] == "restricted_lookup"
    refused = await two.admit(ALICE, [Stmt()])
    assert isinstance(refused.error, Blocked) and refused.error.sqlstate == "42501"
    now[0] += 3601
    assert (await two.admit(ALICE, [Stmt()])).error is None


async def test_coverage_crossed_on_two_instances(stores: tuple[RedisStore, RedisStore]) -> None:
    rules = ruleset(
        {"id": "cov", "detect": "coverage", "subject": "person", "share": 0.5, "of": 40}
    )
    one, two = (Guard(rules, s, ledger_key=KEY) for s in stores)

    def seen(keys: range) -> Tally:
        t = Tally()
        for k in keys:
            t.seen("person", subject_hash(KEY, "person", str(k)))
        return t

    adm = await one.admit(ALICE, [Stmt()])
    assert await one.finished(ALICE, adm.token, finished(seen(range(15)))) == []
    adm = await two.admit(ALICE, [Stmt()])
    (hit,) = await two.finished(ALICE, adm.token, finished(seen(range(10, 20))))
    assert (hit["distinct"], hit["threshold"], hit["of"]) == (20, 20, 40)
    assert isinstance((await one.admit(ALICE, [Stmt()])).error, Blocked)


async def test_a_fail_closed_store_that_is_down_says_so_in_the_record() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", fail_closed=True, timeout=0.2)
    guard = Guard(
        ruleset(
            {
                "id": "cov",
                "detect": "coverage",
                "subject": "person",
                "share": 0.5,
                "of": 4,
                "action": "log",
            }
        ),
        store,
        ledger_key=KEY,
    )
    try:
        adm = await guard.admit(ALICE, [Stmt()])  # log: nothing to look up before it runs
        assert adm.error is None
        tally = Tally()
        tally.seen("person", "ab" * 16)
        assert await guard.finished(ALICE, adm.token, finished(tally)) == [
            {"rule": "cov", "store": "unavailable"},
            {"store": "degraded"},
        ]
    finally:
        await store.close()
