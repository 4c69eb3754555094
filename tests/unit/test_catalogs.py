"""CatalogSet (proxy/catalogs.py): per-database snapshots, coalesced and rate-limited loads.

The loader here stands for load_catalog (which the integration tests run
against PostgreSQL): it hands out snapshots built from `self.tables` and can
be held mid-load, so concurrency is decided by events, never by timing.
"""

from __future__ import annotations

import asyncio

from proxy.catalog import Catalog, Relation
from proxy.catalogs import CatalogSet


class Loader:
    def __init__(self) -> None:
        self.tables: dict[str, list[str]] = {"main": ["t1"], "other": ["o1"]}
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.fail: set[str] = set()
        self.dropped: set[str] = set()

    async def __call__(self, db: str) -> Catalog:
        self.calls.append(db)
        snapshot = list(self.tables.get(db, []))  # what the load sees when it starts
        self.entered.set()
        await self.gate.wait()
        if db in self.fail:
            raise OSError(f"cannot reach {db}")
        if db in self.dropped:
            raise NoSuchDatabase(f'database "{db}" does not exist')
        rels = {f"public.{t}": Relation("public", t) for t in snapshot}
        return Catalog(rels)


class NoSuchDatabase(Exception):
    sqlstate = "3D000"  # as asyncpg's InvalidCatalogNameError carries it


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _names(c: Catalog | None) -> list[str]:
    assert c is not None
    return sorted(c.relations)


async def test_each_database_has_its_own_snapshot() -> None:
    loader = Loader()
    cs = CatalogSet(loader, "main", min_interval=0)
    assert _names(await cs.ensure("main")) == ["public.t1"]
    assert _names(await cs.ensure("other")) == ["public.o1"]
    assert cs.get("third") is None
    await cs.ensure("main")
    assert loader.calls == ["main", "other"]  # loaded once, then served from memory


async def test_concurrent_requests_share_one_load() -> None:
    loader = Loader()
    loader.gate.clear()
    cs = CatalogSet(loader, "main", min_interval=0)
    waiters = [asyncio.create_task(cs.ensure("main")) for _ in range(5)]
    await loader.entered.wait()
    loader.gate.set()
    results = await asyncio.gather(*waiters)
    assert loader.calls == ["main"]
    assert all(r is results[0] for r in results)


async def test_a_miss_during_a_load_waits_for_a_load_that_started_after_it() -> None:
    loader = Loader()
    cs = CatalogSet(loader, "main", min_interval=0)
    await cs.ensure("main")
    loader.gate.clear()
    loader.entered.clear()
    periodic = asyncio.create_task(cs.refresh("main"))
    await loader.entered.wait()  # a load is under way, it saw only t1
    loader.tables["main"].append("new_view")  # created after that load started
    miss = asyncio.create_task(cs.refresh("main", miss=True))
    loader.gate.set()
    assert _names(await periodic) == ["public.t1"]
    assert _names(await miss) == ["public.new_view", "public.t1"]
    assert loader.calls == ["main", "main", "main"]


async def test_an_unchanged_snapshot_keeps_its_object() -> None:
    loader = Loader()
    cs = CatalogSet(loader, "main", min_interval=0)
    first = await cs.ensure("main")
    assert await cs.refresh("main") is first
    loader.tables["main"].append("t2")
    assert await cs.refresh("main") is not first


async def test_a_failed_load_is_retried_at_most_once_per_interval() -> None:
    loader, clock = Loader(), Clock()
    loader.fail.add("other")
    cs = CatalogSet(loader, "main", min_interval=30, clock=clock)
    assert await cs.ensure("other") is None
    assert "cannot reach other" in cs.failure("other")
    assert await cs.ensure("other") is None
    assert loader.calls == ["other"]  # no second connection within the interval
    clock.now += 31
    loader.fail.clear()
    assert _names(await cs.ensure("other")) == ["public.o1"]
    assert cs.failure("other") == ""


async def test_a_failed_refresh_keeps_the_previous_snapshot() -> None:
    loader = Loader()
    cs = CatalogSet(loader, "main", min_interval=0)
    first = await cs.ensure("main")
    loader.fail.add("main")
    assert await cs.refresh("main") is first
    assert cs.get("main") is first and cs.failure("main")


async def test_refresh_all_covers_the_default_and_every_database_seen() -> None:
    loader = Loader()
    cs = CatalogSet(loader, "main", min_interval=0)
    await cs.ensure("other")
    await cs.refresh_all()
    assert sorted(loader.calls) == ["main", "other", "other"]


async def test_a_dropped_database_is_forgotten_and_no_longer_refreshed() -> None:
    loader = Loader()
    cs = CatalogSet(loader, "main", min_interval=0)
    await cs.ensure("other")
    loader.dropped.add("other")
    await cs.refresh_all()
    assert cs.databases() == ["main"] and cs.get("other") is None
    loader.calls.clear()
    await cs.refresh_all()
    assert loader.calls == ["main"]  # the periodic refresh stopped asking for it
    loader.dropped.clear()  # made again under the same name: loaded afresh on first use
    assert _names(await cs.ensure("other")) == ["public.o1"]


async def test_close_cancels_a_load_under_way() -> None:
    loader = Loader()
    loader.gate.clear()
    cs = CatalogSet(loader, "main", min_interval=0)
    waiter = asyncio.create_task(cs.ensure("main"))
    await loader.entered.wait()
    await cs.close()
    (result,) = await asyncio.gather(waiter, return_exceptions=True)
    assert isinstance(result, asyncio.CancelledError)
    assert cs.get("main") is None
