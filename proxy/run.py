"""`oversight serve`: the process around the proxy.

Loads rules and the upstream catalog, builds the enforcement hooks, starts
the proxy and the admin HTTP listener, and keeps them current: rules reload
on SIGHUP and on file change (an invalid set is refused, the old one kept),
the catalogs (one per database sessions use, see catalogs.py) refresh on a
timer, after DDL seen through the proxy and when a statement names a
relation they do not know. /readyz says ready only once the default
database's catalog has loaded.
SIGTERM/SIGINT stop accepting and let sessions finish up to the grace period.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from proxy import metrics
from proxy.admin import AdminServer
from proxy.alerts import Alerter, AlertStats
from proxy.audit import AuditConfig, AuditLog
from proxy.catalog import Catalog, load_catalog
from proxy.catalogs import CatalogSet
from proxy.enforce import Enforcer
from proxy.guard import Guard, make_store
from proxy.guard.cancel import CancelDirectory
from proxy.hooks import ALLOW_ALL, Hooks
from proxy.idsrc.setup import identity_resolver
from proxy.ledger.canaries import Canaries, Tripwire
from proxy.login import proxy_login
from proxy.recorder import Recorder
from proxy.reports.api import ReportConfig
from proxy.rules import RulesError, RuleSet, load_rules
from proxy.rules.subjects import SubjectRule
from proxy.server import ProxyServer
from proxy.settings import Settings
from proxy.watching import Watching

log = logging.getLogger("oversight")
T = TypeVar("T")


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; exit code 2 for rules that do not load."""
    try:
        rules = load_rules(settings.rules, settings.source_attributes)
    except RulesError as e:
        print(f"oversight: rules in {settings.rules} do not validate:", file=sys.stderr)
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    return run_async(Service(settings, rules).run())


def audit_config(settings: Settings) -> AuditConfig:
    key = settings.audit_key.get_secret_value().encode() if settings.audit_key else None
    return AuditConfig(
        path=settings.audit_log,
        key=key,
        rotate_bytes=settings.audit_rotate_bytes,
        fsync_interval=settings.audit_fsync_interval,
        stdout=settings.audit_stdout,
        fail_open=settings.audit_fail_open,
    )


@functools.cache
def alert_stats() -> AlertStats:
    """The process's alert counters, registered once with the /metrics registry."""
    stats = AlertStats()
    metrics.METRICS.registry.register(stats)
    return stats


def build_server(
    settings: Settings,
    hooks: Hooks | None = None,
    *,
    cancels: CancelDirectory | None = None,
    alerts: Alerter | None = None,
    canaries: Canaries | None = None,
    tripwire: Tripwire | None = None,
) -> ProxyServer:
    """The proxy with its audit log, recorder, logins and identity sources, composed here only."""
    hooks = hooks or ALLOW_ALL
    audit = AuditLog(audit_config(settings))
    if alerts is not None:
        alerts.audit_event = audit.write  # `alert` events join the same hash chain
    recorder = Recorder(
        audit,
        hooks,
        redact=settings.audit_redact,
        alerts=alerts,
        canaries=canaries,
        tripwire=tripwire,
    )
    return ProxyServer(
        settings,
        hooks,
        audit=audit,
        recorder=recorder,
        login=proxy_login(settings),
        identities=identity_resolver(settings) if settings.upstream else None,
        cancels=cancels,
        watching=ledger_watching(settings, hooks),
    )


def ledger_watching(settings: Settings, hooks: Hooks) -> Watching | None:
    """The subject ledger's watched columns, following the enforcer's rules and catalogs.

    Read at each use, so a rules reload and a catalog refresh apply to
    sessions already open; without an enforcer (no rules) nothing is watched.
    """
    if not isinstance(hooks, Enforcer):
        return None
    enforcer = hooks

    def inputs(database: str) -> tuple[Sequence[SubjectRule], Catalog | None]:
        cats = enforcer.catalogs
        return enforcer.rules.subjects, cats.get(database) if cats is not None else enforcer.catalog

    def decoys() -> dict[str, frozenset[str]]:
        out: dict[str, set[str]] = {}
        for c in enforcer.rules.canaries:
            out.setdefault(c.subject, set()).update(c.keys)
        return {s: frozenset(keys) for s, keys in out.items()}

    return Watching(settings.ledger_secret, inputs, decoys)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on uvloop when installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result


class Service:
    """The running proxy with its reloads and refreshes."""

    def __init__(self, settings: Settings, rules: RuleSet) -> None:
        self.settings = settings
        self.rules = rules
        up = settings.upstream_target
        self.catalogs = CatalogSet(lambda db: load_catalog(up.uri, database=db), up.database)
        self._dirty: set[str] = set()  # databases DDL was seen in since the last refresh
        self.enforcer: Enforcer | None = None
        self.server: ProxyServer | None = None
        self.alerter = Alerter(rules.alerts, stats=alert_stats())
        # Canary keys hashed under the ledger key, again at every reload.
        self.canaries = Canaries(settings.ledger_secret, rules.canaries)
        self.tripwire = Tripwire()  # sessions a blocking canary tripped
        self._stop = asyncio.Event()
        self._refresh = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        s = self.settings
        catalog = await self.catalogs.ensure(self.catalogs.default) or Catalog()
        store = make_store(s.redis_url, fail_closed=s.redis_fail_closed)
        guard = Guard(self.rules, store, catalog, ledger_key=s.ledger_secret)
        salt = s.hash_salt.get_secret_value() if s.hash_salt else None
        self.enforcer = Enforcer(
            self.rules,
            catalog,
            guard,
            hash_salt=salt,
            on_ddl=self._ddl,
            catalogs=self.catalogs,
            ledger_key=s.ledger_secret,
            tripwire=self.tripwire,
        )
        cancels = CancelDirectory(store) if s.redis_url else None
        self.server = build_server(
            s,
            self.enforcer,
            cancels=cancels,
            alerts=self.alerter,
            canaries=self.canaries,
            tripwire=self.tripwire,
        )
        await self.server.start()
        await self.alerter.start()
        token = s.admin_token.get_secret_value() if s.admin_token else None
        self.admin = AdminServer(s.admin_listen, token, self.ready, reports=self._report_config())
        await self.admin.start()
        self._tasks = [
            asyncio.create_task(self._catalog_loop(), name="catalog-refresh"),
            asyncio.create_task(self._watch_rules(), name="rules-watch"),
        ]

    def _report_config(self) -> ReportConfig | None:
        """The dashboard's reports read this instance's audit files, with the live rule set."""
        s = self.settings
        if not s.audit_log:
            return None
        key = s.audit_key
        return ReportConfig(
            audit=[s.audit_log],
            audit_key=key.get_secret_value().encode() if key else None,
            ledger_keys=s.ledger_secrets,
            rules=lambda: self.rules,
            threads=1,  # a report must not take the cores the proxy's sessions run on
        )

    async def run(self) -> int:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        assert self.server is not None
        print(
            f"oversight: listening on {self.settings.listen_address[0]}:{self.server.port}",
            file=sys.stderr,
            flush=True,
        )
        await self._stop.wait()
        log.info("shutting down: no new connections, grace %.0fs", self.settings.shutdown_grace)
        await self.stop()
        return 0

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.catalogs.close()
        if self.server is not None:
            await self.server.stop()
        await self.alerter.stop()
        await self.admin.stop()

    @property
    def catalog_ok(self) -> bool:
        return self.catalogs.get(self.catalogs.default) is not None

    async def ready(self) -> bool:
        """Readiness: rules and the default database's catalog loaded, the upstream reachable."""
        if self.enforcer is None or not self.catalog_ok:
            return False
        up = self.settings.upstream_target
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(up.host, up.port), 2.0)
        except (OSError, TimeoutError):
            return False
        w.close()
        return True

    async def reload(self) -> bool:
        """Reload rules; an invalid set is refused with its problems logged."""
        try:
            rules = await asyncio.to_thread(
                load_rules, self.settings.rules, self.settings.source_attributes
            )
        except RulesError as e:
            metrics.rules_reloaded(False)
            log.error(
                "rules reload refused, keeping the previous set:\n  %s", "\n  ".join(e.problems)
            )
            return False
        self.rules = rules
        if self.enforcer is not None:
            self.enforcer.reload(rules=rules)
        self.alerter.reload(rules.alerts)
        self.canaries.load(rules.canaries)
        metrics.rules_reloaded(True)
        log.info("rules reloaded (version %s)", rules.version[:12])
        self._refresh.set()  # a reload refreshes the catalog too
        return True

    def _ddl(self, database: str) -> None:
        self._dirty.add(database)
        self._refresh.set()

    async def _catalog_loop(self) -> None:
        """Refresh every loaded database on the timer; DDL-touched ones right after it."""
        period = self.settings.catalog_refresh
        while True:
            wait = period if self.catalog_ok and period > 0 else 5.0
            timed_out = False
            try:
                await asyncio.wait_for(self._refresh.wait(), wait)
            except TimeoutError:
                timed_out = True
            self._refresh.clear()
            await asyncio.sleep(0.2)  # let a burst of DDL settle
            dirty, self._dirty = self._dirty, set()
            if timed_out or not dirty:
                await self.catalogs.refresh_all()  # the timer, or a rules reload
            else:
                await asyncio.gather(*(self.catalogs.refresh(db) for db in dirty))
            if self.enforcer is not None:
                self.enforcer.engine_for(self.catalogs.default)  # the guard's sizes follow

    async def _watch_rules(self) -> None:
        try:
            from watchfiles import awatch
        except ImportError:
            return
        path = Path(self.settings.rules)
        if not path.exists():
            return
        async for _ in awatch(path, debounce=500, recursive=True):
            await self.reload()
