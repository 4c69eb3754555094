"""Shared fixtures: the throwaway PostgreSQL (`pg`), the proxy (`proxy_factory`), `run_sync`.

- `pg` (session): a PgCluster (tests/pgcluster.py) with host, port, superuser
  `user`/`password`, `dbname` ("oversight_test"), `roles` (scramuser, md5user,
  plainuser and their passwords), `datadir`, and `dsn(user=, password=, dbname=)`
  / `params(...)` helpers. `OVERSIGHT_TEST_DSN` and `OVERSIGHT_TEST_PG_BIN`
  change where it comes from (see tests/pgcluster.py).
- `proxy_factory` (per test): `await proxy_factory(hooks=..., rules=..., **settings)`
  starts an Oversight proxy in the test's event loop in front of `pg` and
  returns a ProxyHandle with the same `dsn()`/`params()` helpers; every proxy
  is stopped at teardown.
- `endpoint` (per test): a proxy from `proxy_factory()` with default settings;
  with `OVERSIGHT_TEST_DIRECT=1` it is `pg` itself, to check that a failing
  client test fails because of the proxy and not because of the test.
- `run_sync` (session): `await run_sync(fn, *args, **kw)` runs a blocking
  client (psycopg sync, pg8000, psql) in a worker thread. The proxy runs in
  the test's event loop, so a blocking client called in that thread would
  deadlock against it. A thread is not enough for a call that blocks while
  holding the GIL: psycopg's `conn.cancel()` (libpq's PQcancel) waits for the
  proxy to close the cancel socket, so run it in a subprocess (or use
  `cancel_safe()`).
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from openrules import OPEN_RULES
from pgcluster import PgCluster, running_cluster, stop_all

T = TypeVar("T")


def _on_sigterm(signum: int, frame: Any) -> None:
    # A SIGTERM (CI timeout, `kill`) stops the clusters, then kills us as it would have.
    stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _on_sigterm)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    with running_cluster() as cluster:
        yield cluster


class RunSync(Protocol):
    def __call__(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Awaitable[T]: ...


async def _run_sync(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))


@pytest.fixture(scope="session")
def run_sync() -> RunSync:
    return _run_sync


@dataclass
class ProxyHandle:
    """A running proxy: where to connect, and what it was started with."""

    server: Any  # proxy.server.ProxyServer
    settings: Any  # proxy.settings.Settings
    pg: PgCluster
    audit_log: Path
    host: str
    port: int

    def dsn(
        self, user: str | None = None, password: str | None = None, dbname: str | None = None
    ) -> str:
        direct = self.pg.dsn(user=user, password=password, dbname=dbname)
        return direct.replace(f"@{self.pg.host}:{self.pg.port}/", f"@{self.host}:{self.port}/", 1)

    def params(
        self, user: str | None = None, password: str | None = None, dbname: str | None = None
    ) -> dict[str, Any]:
        out = self.pg.params(user=user, password=password, dbname=dbname)
        out.update(host=self.host, port=self.port)
        return out

    async def stop(self, grace: float | None = None) -> None:
        """Stop the proxy; `grace` defaults to the `shutdown_grace` setting."""
        await self.server.stop(grace)


ProxyFactory = Callable[..., Awaitable[ProxyHandle]]


@pytest.fixture
async def proxy_factory(pg: PgCluster, tmp_path: Path) -> AsyncIterator[ProxyFactory]:
    started: list[ProxyHandle] = []

    async def make(*, hooks: Any = None, rules: str | Path | None = None, **kw: Any) -> ProxyHandle:
        # Imported here so that OVERSIGHT_TEST_DIRECT runs need no proxy at all.
        from proxy.run import build_server
        from proxy.settings import Settings

        n = len(started)
        if rules is None:
            rules = tmp_path / f"rules-{n}.yaml"
            rules.write_text(OPEN_RULES)
        audit = Path(kw.pop("audit_log", tmp_path / f"audit-{n}.jsonl"))
        settings = Settings(
            listen=kw.pop("listen", "127.0.0.1:0"),
            upstream=kw.pop("upstream", pg.dsn()),
            rules=str(rules),
            audit_log=str(audit),
            admin_listen=kw.pop("admin_listen", ""),
            **kw,
        )
        server = build_server(settings, hooks=hooks)
        await server.start()
        handle = ProxyHandle(server, settings, pg, audit, "127.0.0.1", server.port)
        started.append(handle)
        return handle

    yield make
    # A short grace: sessions a failed test left open must not slow the suite.
    errors = []
    for handle in reversed(started):
        try:
            await handle.stop(grace=1.0)
        except Exception as e:
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
async def endpoint(pg: PgCluster, proxy_factory: ProxyFactory) -> PgCluster | ProxyHandle:
    if os.environ.get("OVERSIGHT_TEST_DIRECT"):
        return pg
    return await proxy_factory()
