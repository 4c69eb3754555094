"""The throwaway PostgreSQL the peer suites run against, and Oversight in front of it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.peers.phases import SUPERUSER, Phase

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO / "tests"))

import pgcluster  # noqa: E402  (tests/ is not a package; the path is set just above)
from openrules import OPEN_RULES  # noqa: E402
from serveproc import Served, start_serve  # noqa: E402

PROXY_ROLE = "oversight_peer"  # Oversight's own upstream account (catalog reads)
KEEP_ROLES = {SUPERUSER, PROXY_ROLE}
DATABASES = ["postgres", "psycopg2_test"]  # recreated, with hstore, before every run


PG_HBA = """\
# Written by benchmarks/peers for phase {phase}.
local all all trust
host all {proxy_role} 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 {method}
host replication all 127.0.0.1/32 {method}
"""

CONF = """
# Appended by benchmarks/peers.
ssl = off
ssl_cert_file = '{cert}'
ssl_key_file = '{key}'
max_prepared_transactions = 10
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
"""


def pg_bindir() -> Path:
    env = os.environ.get("OVERSIGHT_TEST_PG_BIN")
    if env:
        return Path(env)
    system = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: p.parts)
    if system:
        return system[-1].parent
    from proxy.demo.cluster import pg_bindir as pgserver_bindir

    print("no system PostgreSQL: pgserver's binaries lack hstore and TLS", file=sys.stderr)
    return pgserver_bindir(os.geteuid() == 0)


class Server:
    """A LocalCluster the phases reconfigure; administered over its unix socket."""

    def __init__(self, bindir: Path) -> None:
        self.local = pgcluster.LocalCluster(bindir)
        self.proxy_password = self.local.password + "-proxy"
        self.cert = self.local.tmp / "server.crt"
        self.key = self.local.tmp / "server.key"

    def start(self) -> None:
        local = self.local
        local.initdb()
        self._make_cert()
        (local.datadir / "pg_hba.conf").write_text(self._hba("start", "scram-sha-256"))
        with (local.datadir / "postgresql.conf").open("a") as f:
            f.write(CONF.format(cert=self.cert, key=self.key))
        local.start()
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(PROXY_ROLE), sql.Literal(self.proxy_password)
                )
            )

    def _make_cert(self) -> None:
        cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        cmd += ["-subj", "/CN=localhost", "-keyout", str(self.key), "-out", str(self.cert)]
        subprocess.run(cmd, check=True, capture_output=True)
        for path in (self.cert, self.key):
            if self.local.pw is not None:
                os.chown(path, self.local.pw.pw_uid, self.local.pw.pw_gid)
            path.chmod(0o600)

    def _hba(self, phase: str, method: str) -> str:
        return PG_HBA.format(phase=phase, proxy_role=PROXY_ROLE, method=method)

    @property
    def port(self) -> int:
        return self.local.port

    def admin(self, dbname: str = "template1") -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=str(self.local.tmp),
            port=self.local.port,
            user=SUPERUSER,
            dbname=dbname,
            autocommit=True,
        )

    def password_for(self, phase: Phase) -> str:
        return phase.password or self.local.password

    def reset(self, phase: Phase) -> None:
        """Fresh databases and roles, the phase's pg_hba, TLS and password encryption."""
        with self.admin() as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")
            dbs = conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate").fetchall()
            for (db,) in dbs:
                self._rollback_prepared(db)
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))
            roles = conn.execute("SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_'").fetchall()
            for (role,) in roles:
                if role not in KEEP_ROLES:
                    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
            for db in DATABASES:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
            conn.execute("ALTER SYSTEM RESET ALL")
            if phase.ssl:
                conn.execute("ALTER SYSTEM SET ssl = on")
            conn.execute(
                sql.SQL("SET password_encryption = {}").format(sql.Literal(phase.encryption))
            )
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(SUPERUSER), sql.Literal(self.password_for(phase))
                )
            )
        for db in DATABASES:
            with self.admin(db) as conn:
                conn.execute("CREATE EXTENSION hstore")
        (self.local.datadir / "pg_hba.conf").write_text(
            self._hba(f"{phase.suite} {phase.name}", phase.hba)
        )
        with self.admin() as conn:
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)  # the postmaster rereads its files asynchronously

    def _rollback_prepared(self, db: str) -> None:
        with self.admin() as conn:
            gids = conn.execute(
                "SELECT gid FROM pg_prepared_xacts WHERE database = %s", [db]
            ).fetchall()
        if gids:
            with self.admin(db) as conn:
                for (gid,) in gids:
                    conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))

    def destroy(self) -> None:
        self.local.destroy()


@contextlib.contextmanager
def oversight(server: Server, phase: Phase, workdir: Path) -> Iterator[Served]:
    rules = workdir / "rules.yaml"
    rules.write_text(OPEN_RULES)
    sslmode = "require" if phase.ssl else "disable"
    settings = {
        "OVERSIGHT_LISTEN": "127.0.0.1:0",
        "OVERSIGHT_UPSTREAM": (
            f"postgresql://{PROXY_ROLE}:{server.proxy_password}@127.0.0.1:{server.port}"
            f"/postgres?sslmode={sslmode}"
        ),
        "OVERSIGHT_RULES": str(rules),
        "OVERSIGHT_AUDIT_LOG": str(workdir / "audit.jsonl"),
        "OVERSIGHT_ADMIN_LISTEN": "",
        "OVERSIGHT_SHUTDOWN_GRACE": "2",
    }
    if phase.ssl:
        settings["OVERSIGHT_TLS_CERT"] = str(server.cert)
        settings["OVERSIGHT_TLS_KEY"] = str(server.key)
    served = start_serve(settings)
    try:
        yield served
    finally:
        served.stop()
        (workdir / "oversight.log").write_text("".join(served.log))
