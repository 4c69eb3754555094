"""One catalog snapshot per database, loaded lazily and refreshed on demand.

A client may connect to any database the upstream serves; names in its
statements mean that database's relations. So the snapshot the engine
decides against is the one of the session's database: the default database
(the upstream URI's) is loaded at start, any other on the first session that
uses it, each with Oversight's own account.

Refreshes are coalesced and rate-limited per database: concurrent requests
share one load, and two loads of the same database start at least
`min_interval` seconds apart. A refresh asked for because a statement named
something the snapshot did not know (`miss=True`) waits out that interval
rather than skip it, so a relation created after the last load is known when
the statement is decided again: the price is a delay of at most
`min_interval` plus one load, paid only by statements naming unknown names.
A snapshot whose content did not change keeps its object (and so the
engine's decision cache).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from proxy.catalog import Catalog

log = logging.getLogger("oversight.catalog")

Loader = Callable[[str], Awaitable[Catalog]]
_NO_SUCH_DATABASE = "3D000"  # invalid_catalog_name


@dataclass(slots=True)
class _Entry:
    catalog: Catalog | None = None
    started: float = float("-inf")  # monotonic time the last load started
    failed: str = ""  # why the last load failed ("" when it succeeded)
    task: asyncio.Task[Catalog | None] | None = None


class CatalogSet:
    def __init__(
        self,
        loader: Loader,
        default: str,
        *,
        min_interval: float = 1.0,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loader = loader
        self.default = default
        self.min_interval = min_interval
        self.timeout = timeout
        self.clock = clock
        self.loads = 0  # loads started, for tests and metrics
        self._entries: dict[str, _Entry] = {}

    def get(self, database: str) -> Catalog | None:
        """The loaded snapshot of `database`, or None if it never loaded."""
        entry = self._entries.get(database)
        return entry.catalog if entry is not None else None

    def failure(self, database: str) -> str:
        entry = self._entries.get(database)
        return entry.failed if entry is not None else ""

    def databases(self) -> list[str]:
        return list(self._entries)

    async def ensure(self, database: str) -> Catalog | None:
        """The snapshot of `database`, loading it first if it never loaded.

        A database whose last load failed is tried again at most every
        `min_interval` seconds; in between the answer is None at once.
        """
        entry = self._entries.get(database)
        if entry is not None and entry.catalog is not None:
            return entry.catalog
        recent = entry is not None and self.clock() - entry.started < self.min_interval
        if entry is not None and entry.task is None and entry.failed and recent:
            return None
        return await self.refresh(database)

    async def refresh(self, database: str, *, miss: bool = False) -> Catalog | None:
        """Load `database` again (one load for all concurrent callers).

        Returns the snapshot after the load (the previous one if it failed).
        With `miss`, a load already under way (which may have started before
        the missing relation existed) is followed by one more; every load
        starts at least `min_interval` after the previous one.
        """
        entry = self._entries.setdefault(database, _Entry())
        asked = self.clock()
        while True:
            task = entry.task
            if task is None:
                task = entry.task = asyncio.create_task(self._load(database, entry))
            catalog = await asyncio.shield(task)
            # A load that was already under way when the miss was seen may have
            # started before the missing relation existed: then one more.
            if not miss or entry.started >= asked:
                return catalog

    async def refresh_all(self) -> None:
        """The periodic refresh: every database loaded so far (and the default)."""
        names = dict.fromkeys([self.default, *self._entries])
        await asyncio.gather(*(self.refresh(db) for db in names))

    async def close(self) -> None:
        """Cancel loads under way (at shutdown)."""
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _load(self, database: str, entry: _Entry) -> Catalog | None:
        try:
            wait = entry.started + self.min_interval - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            entry.started = self.clock()
            self.loads += 1
            try:
                fresh = await asyncio.wait_for(self.loader(database), self.timeout)
            except Exception as e:  # any failure: keep the old snapshot, say why
                entry.failed = f"{type(e).__name__}: {e}"
                if getattr(e, "sqlstate", "") == _NO_SUCH_DATABASE and database != self.default:
                    # Dropped: forget it, so the periodic refresh stops asking; a session to a
                    # database of that name made again loads it afresh.
                    log.info("database %r no longer exists; its catalog is dropped", database)
                    if self._entries.get(database) is entry:
                        del self._entries[database]
                    return None
                log.warning("cannot read the catalog of database %r (%s)", database, e)
                return entry.catalog
            entry.failed = ""
            if entry.catalog is None or entry.catalog.version != fresh.version:
                entry.catalog = fresh
            return entry.catalog
        finally:
            entry.task = None
