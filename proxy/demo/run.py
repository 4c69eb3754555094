"""`oversight demo`: see Oversight work in five minutes without a database of your own.

Starts an embedded PostgreSQL (cluster.py), loads the synthetic data set
(data.py), creates three demo logins with different rights, starts the proxy
with the example rules exactly as `oversight serve` would, and prints how to
connect. Ctrl-C (or SIGTERM) stops the proxy and PostgreSQL and removes what
the run created; `--keep` keeps the data directory so the next run starts
without reloading.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from proxy.demo import data
from proxy.demo.cluster import ClusterError, EmbeddedPostgres

if TYPE_CHECKING:
    from proxy.settings import Settings

DATABASE = "demo"
SERVICE_ROLE = "oversight"  # Oversight's own upstream account: catalog reads, health checks


@dataclass(frozen=True)
class DemoUser:
    name: str
    password: str
    who: str
    examples: tuple[tuple[str, str], ...]  # (what it shows, SQL)
    # Groups granted as PostgreSQL roles (groups_from_roles) instead of in `users:`.
    roles: tuple[str, ...] = ()


USERS = (
    DemoUser(
        "alice",
        "alice-demo",
        "analyst, region north",
        (
            (
                "row filter + masks: only the north region; ssn redacted, phone partial, "
                "dob cut to the year, email hashed",
                "SELECT full_name, region, ssn, phone, dob, email FROM people ORDER BY id LIMIT 5;",
            ),
            ("block: case notes are denied to analysts", "SELECT id, notes FROM cases LIMIT 5;"),
            (
                "cut-off: analysts get at most 1000 rows per statement",
                "SELECT id, opened, status FROM cases;",
            ),
        ),
    ),
    DemoUser(
        "bob",
        "bob-demo",
        "analyst, region south",
        (
            (
                "row filter: the same query as carol's, but bob only counts the south",
                "SELECT region, count(*) FROM people GROUP BY region ORDER BY region;",
            ),
            (
                "mask: ssn redacted, email hashed (still joinable, not readable)",
                "SELECT full_name, ssn, email FROM people ORDER BY id LIMIT 3;",
            ),
            (
                "block: SELECT * reads the denied notes column too",
                "SELECT * FROM cases LIMIT 5;",
            ),
        ),
    ),
    DemoUser(
        "carol",
        "carol-demo",
        "supervisor, all regions",
        (
            (
                "no row filter: supervisors count every region",
                "SELECT region, count(*) FROM people GROUP BY region ORDER BY region;",
            ),
            (
                "mask: supervisors see the last four digits of an SSN",
                "SELECT full_name, ssn, phone FROM people ORDER BY id LIMIT 3;",
            ),
            (
                "block: the internal schema is closed to everyone through Oversight",
                "SELECT count(*) FROM internal.audit_notes;",
            ),
            (
                "canary: person 900001 is a planted decoy; looking them up writes a `canary` "
                "event to the audit log (and alerts, with an `alerts:` route)",
                "SELECT full_name, phone FROM people WHERE id = 900001;",
            ),
        ),
    ),
    DemoUser(
        "dave",
        "dave-demo",
        "supervisor by a PostgreSQL role: GRANT supervisors TO dave (no `users:` entry)",
        (
            (
                "groups from the upstream: the supervisors' rule applies, all regions",
                "SELECT region, count(*) FROM people GROUP BY region ORDER BY region;",
            ),
            (
                "mask: the supervisors' partial SSN; after REVOKE supervisors FROM dave, his "
                "next login's reads of people are refused (people-default-deny)",
                "SELECT full_name, ssn FROM people ORDER BY id LIMIT 3;",
            ),
            (
                "block: the internal schema is closed to everyone through Oversight",
                "SELECT count(*) FROM internal.audit_notes;",
            ),
        ),
        roles=("supervisors",),
    ),
)


def cmd_demo(keep: bool, listen: str, data_dir: str | None, scale: float) -> int:
    """Entry point for `oversight demo`; returns the process exit code."""
    if scale <= 0:
        print("oversight demo: --scale must be positive", file=sys.stderr)
        return 2
    from proxy.run import run_async

    return run_async(Demo(keep=keep, listen=listen, data_dir=data_dir, scale=scale).run())


def _default_keep_dir() -> Path:
    # Under root the data dir must be reachable by the unprivileged server user,
    # so it stays out of /root; otherwise the user's cache dir.
    if os.geteuid() == 0:
        return Path("/var/tmp/oversight-demo")
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "oversight" / "demo"


def _admin_listen() -> str:
    """The usual admin port when free, else any port (a real proxy may hold 9187)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 9187))
        except OSError:
            return "127.0.0.1:0"
    return "127.0.0.1:9187"


def _demo_settings(base: type[Settings]) -> type[Settings]:
    """Settings that read only what the demo passes: OVERSIGHT_* and oversight.toml belong
    to a real deployment and could point the demo elsewhere."""

    class DemoSettings(base):  # type: ignore[valid-type,misc]
        model_config = SettingsConfigDict(toml_file=None)

        @classmethod
        def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: Any, **others: Any
        ) -> tuple[Any, ...]:
            return (init_settings,)

    return DemoSettings


class Progress:
    """One line that moves while the data loads (a line per table when not a terminal)."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.shown: set[str] = set()

    def __call__(self, table: str, done: int, total: int) -> None:
        if self.tty:
            line = f"  loading {table:<22} {done:>9,} / {total:,} rows"
            print("\r" + line.ljust(70), end="", flush=True)
        elif done >= total and table not in self.shown:
            self.shown.add(table)
            print(f"  loaded {table}: {total:,} rows", flush=True)

    def finish(self) -> None:
        if self.tty:
            print("\r" + " " * 70 + "\r", end="", flush=True)


class Demo:
    """One run of the demo; `run()` returns when stopped."""

    def __init__(self, keep: bool, listen: str, data_dir: str | None, scale: float) -> None:
        self.keep = keep
        self.listen = listen
        self.scale = scale
        self.persistent = keep or bool(data_dir)  # an explicit --data-dir is never deleted
        self._created: list[Path] = []  # removed at exit unless kept
        if data_dir:
            self.base = Path(data_dir).resolve()
            self.datadir = self.base
            if keep:  # the audit log and rules copy are kept beside the data
                self.workdir = self.base.with_name(self.base.name + "-oversight")
            else:
                self.workdir = Path(tempfile.mkdtemp(prefix="oversight-demo-"))
                self._created.append(self.workdir)
        elif keep:
            self.base = _default_keep_dir()
            self.datadir = self.base / "pgdata"
            self.workdir = self.base
        else:
            self.base = Path(tempfile.mkdtemp(prefix="oversight-demo-"))
            self.datadir = self.base / "pgdata"
            self.workdir = self.base
            self._created.append(self.base)
        self.pg: EmbeddedPostgres | None = None
        self.service: Any = None  # proxy.run.Service
        self._stop = asyncio.Event()
        self._ready = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None

        def on_signal() -> None:
            self._stop.set()
            if not self._ready:  # still setting up: abandon it, cleanup follows
                main.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            await self._setup()
            self._ready = True
            self._banner()
            await self._stop.wait()
            print("\nstopping: proxy, then PostgreSQL...", flush=True)
            return 0
        except asyncio.CancelledError:
            print("\ninterrupted; cleaning up...", flush=True)
            return 130
        except (DemoError, ClusterError) as e:
            print(f"oversight demo: {e}", file=sys.stderr, flush=True)
            return 1
        finally:
            await self._teardown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _setup(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pg = EmbeddedPostgres(self.datadir)
        reused = self.pg.initialized
        print(
            f"Oversight demo: starting PostgreSQL {self.pg.version} in {self.datadir}", flush=True
        )
        await self.pg.start()
        await self._prepare_database(reused)
        self.rules = self._rules_dir()
        await self._start_proxy()

    async def _prepare_database(self, reused: bool) -> None:
        assert self.pg is not None
        admin = await self.pg.connect("postgres")
        try:
            if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                await admin.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            await admin.close()
        conn = await self.pg.connect(DATABASE)
        try:
            marker = await data.loaded_marker(conn)
            if reused and marker == data.marker(self.scale):
                print(f"  reusing the data set loaded earlier ({marker})", flush=True)
            else:
                if reused and marker:
                    print(f"  the kept data set is {marker}: reloading at scale {self.scale:g}")
                progress = Progress()
                started = time.monotonic()
                sizes = await data.load(conn, self.scale, progress)
                progress.finish()
                took = time.monotonic() - started
                print(f"  loaded {sizes.total:,} rows in {took:.1f} s", flush=True)
            self.service_password = secrets.token_urlsafe(18)
            await self._roles(conn)
        finally:
            await conn.close()

    async def _roles(self, conn: Any) -> None:
        """Demo logins with plain SELECT rights: Oversight, not GRANTs, narrows them."""
        accounts = [(u.name, u.password) for u in USERS]
        accounts.append((SERVICE_ROLE, self.service_password))
        for name, password in accounts:
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
            verb = "ALTER" if exists else "CREATE"
            quoted = password.replace("'", "''")
            await conn.execute(f"{verb} ROLE {name} LOGIN PASSWORD '{quoted}'")
        for u in USERS:
            for role in u.roles:  # what a DBA does; Oversight reads it (groups_from_roles)
                exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
                if not exists:
                    await conn.execute(f"CREATE ROLE {role} NOLOGIN")
                await conn.execute(f"GRANT {role} TO {u.name}")
        users = ", ".join(u.name for u in USERS)
        await conn.execute(f"GRANT USAGE ON SCHEMA public, internal TO {users}")
        await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public, internal TO {users}")

    def _rules_dir(self) -> Path:
        """./rules when it is the example set, else a copy of the packaged one to edit."""
        from proxy.rules import RulesError, load_rules

        here = Path("rules")
        if here.is_dir():
            with contextlib.suppress(RulesError, OSError):
                if {u.name for u in USERS if not u.roles} <= set(load_rules(here).users):
                    return here.resolve()
        target = self.workdir / "rules"
        target.mkdir(exist_ok=True)
        with as_file(files("proxy") / "demo_rules") as packaged:
            for src in sorted(Path(packaged).glob("*.yaml")):
                dst = target / src.name
                if not dst.exists():  # a kept run keeps the DBA's edits
                    shutil.copyfile(src, dst)
        return target

    async def _start_proxy(self) -> None:
        assert self.pg is not None
        from proxy.rules import RulesError, load_rules
        from proxy.run import Service
        from proxy.settings import Settings

        try:
            rules = load_rules(self.rules)
        except RulesError as e:
            raise DemoError("the rules do not validate:\n  " + "\n  ".join(e.problems)) from e
        self.admin_token = secrets.token_urlsafe(18)
        self.audit_log = self.workdir / "audit.jsonl"
        settings = _demo_settings(Settings).model_validate(
            {
                "listen": self.listen,
                "upstream": self.pg.dsn(SERVICE_ROLE, self.service_password, DATABASE),
                "rules": str(self.rules),
                "audit_log": str(self.audit_log),
                "admin_listen": _admin_listen(),
                "admin_token": self.admin_token,
                "shutdown_grace": 2.0,
                "groups_from_roles": True,  # dave's group is a GRANT, not a `users:` entry
            }
        )
        self.service = Service(settings, rules)
        try:
            await self.service.start()
        except OSError as e:
            raise DemoError(f"cannot listen on {self.listen}: {e.strerror or e}") from e
        self.port = self.service.server.port
        self.host = settings.listen_address[0]
        self.admin_port = self.service.admin.port

    def _banner(self) -> None:
        admin = f"http://127.0.0.1:{self.admin_port}"
        kept = "kept for next time" if self.persistent else "deleted on exit; --keep keeps it"
        lines = [
            "",
            f"  data:      {self.datadir}  ({kept})",
            f"  rules:     {self.rules}  (edits reload live)",
            f"  audit log: {self.audit_log}",
            f"             follow it: oversight tail -f {self.audit_log}",
            f"  dashboard: {admin}/?token={self.admin_token}",
            f"  metrics:   {admin}/metrics",
            "",
            f"Oversight is listening on {self.host}:{self.port}. Connect as one of the demo users:",
        ]
        for u in USERS:
            lines += ["", f"{u.name} ({u.who})"]
            lines.append(
                f'  psql "postgresql://{u.name}:{u.password}@{self.host}:{self.port}/{DATABASE}"'
            )
            for what, sql in u.examples:
                lines += [f"    -- {what}", f"    {sql}"]
        lines += ["", "Press Ctrl-C to stop; the proxy and PostgreSQL stop with it.", ""]
        print("\n".join(lines), flush=True)

    async def _teardown(self) -> None:
        if self.service is not None and self.service.server is not None:
            with contextlib.suppress(Exception):
                await self.service.stop()
        if self.pg is not None:
            await asyncio.to_thread(self.pg.cleanup, delete_data=not self.persistent)
        for path in self._created:
            for _attempt in range(3):  # a late audit flush may recreate a file mid-removal
                shutil.rmtree(path, ignore_errors=True)
                if not path.exists():
                    break
                await asyncio.sleep(0.2)
        if self._ready:
            print("stopped.", flush=True)


class DemoError(Exception):
    """A setup failure worth one line to the user (port taken, bad rules)."""
