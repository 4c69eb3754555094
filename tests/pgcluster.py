"""A throwaway PostgreSQL cluster for the test suite.

The suite must run on a fresh machine with nothing but Python, so by default
it uses the PostgreSQL binaries shipped in the `pgserver` wheel; it runs
`initdb` and `postgres` itself (not pgserver's own starter, which only
listens on a unix socket and trusts everyone) so that the cluster listens on
127.0.0.1 with a free port and password authentication, which the auth tests
need.

Environment variables:

- ``OVERSIGHT_TEST_PG_BIN``: a directory with ``initdb`` and ``postgres``
  (e.g. ``/usr/lib/postgresql/15/bin``) to use instead of pgserver's.
- ``OVERSIGHT_TEST_DSN``: a libpq URI or key=value string for an existing
  server, reached as a superuser; no cluster is started. The suite creates
  (or resets the passwords of) the roles ``scramuser`` and ``md5user``, and
  drops and recreates the database ``oversight_test``. The md5 auth tests
  need that server's pg_hba.conf to say ``md5`` for ``md5user`` on TCP.

PostgreSQL refuses to run as root, so under root the cluster runs as the
unprivileged system user ``oversight-test`` (created when missing) from a
data directory that user owns; the pgserver binaries are then copied to a
world-readable cache under the temp dir, since site-packages may sit in a
home directory that user cannot enter.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from proxy.demo.cluster import free_port, pg_bindir, system_user

SYSTEM_USER = "oversight-test"
TEST_DB = "oversight_test"
# Roles the auth tests log in as; passwords are fixed so failures are readable.
ROLE_PASSWORDS = {
    "scramuser": "scram-secret-1",
    "md5user": "md5-secret-1",
    "plainuser": "plain-secret-1",
}

PG_HBA = """\
# Written by tests/pgcluster.py. The unix socket lives in the private data dir.
local all all trust
host all md5user 127.0.0.1/32 md5
host all plainuser 127.0.0.1/32 password
host all all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
"""

CONF = """
# Appended by tests/pgcluster.py (later lines win).
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockdir}'
password_encryption = 'scram-sha-256'
max_connections = 200
max_prepared_transactions = 10
shared_buffers = 16MB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
log_min_messages = warning
"""


@dataclass(frozen=True)
class PgCluster:
    """How to reach the suite's PostgreSQL; `user`/`password` are a superuser's."""

    host: str
    port: int
    user: str
    password: str
    dbname: str = TEST_DB
    datadir: Path | None = None  # None when OVERSIGHT_TEST_DSN points at an existing server
    bindir: Path | None = None
    roles: dict[str, str] = field(default_factory=lambda: dict(ROLE_PASSWORDS))

    def _creds(self, user: str | None, password: str | None) -> tuple[str, str]:
        user = user or self.user
        if password is None:
            password = self.password if user == self.user else self.roles.get(user, "")
        return user, password

    def dsn(
        self, user: str | None = None, password: str | None = None, dbname: str | None = None
    ) -> str:
        """A libpq URI; the password defaults to the one the suite set for `user`."""
        user, password = self._creds(user, password)
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(dbname or self.dbname)}"

    def params(
        self, user: str | None = None, password: str | None = None, dbname: str | None = None
    ) -> dict[str, Any]:
        """Keyword arguments for drivers that do not take URIs (pg8000)."""
        user, password = self._creds(user, password)
        return {
            "host": self.host,
            "port": self.port,
            "user": user,
            "password": password,
            "database": dbname or self.dbname,
        }


_LIVE: list[LocalCluster] = []
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the postmaster's child process: get SIGQUIT (immediate shutdown) if pytest dies.

    This covers SIGKILL of the test run, which no atexit hook sees. It runs
    after subprocess has switched to the unprivileged user, so it sticks.
    """
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGQUIT)


def stop_all() -> None:
    """Stop every cluster this process started (atexit, SIGTERM)."""
    while _LIVE:
        _LIVE.pop().destroy()


def reap_stale() -> None:
    """Delete data dirs left by test runs that died; their postmasters died with them."""
    for owner in Path(tempfile.gettempdir()).glob("oversight-pg-*/owner.pid"):
        try:
            pid = int(owner.read_text())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(owner.parent, ignore_errors=True)
        except (OSError, ValueError):
            continue


def _ensure_system_user() -> pwd.struct_passwd:
    return system_user(SYSTEM_USER)


class LocalCluster:
    """Owns an initdb'd data directory and its postmaster process."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.pw = _ensure_system_user() if self.as_root else None
        self.tmp = Path(tempfile.mkdtemp(prefix="oversight-pg-"))
        self.datadir = self.tmp / "data"
        self.log = self.tmp / "postgres.log"
        self.password = secrets.token_hex(12)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        (self.tmp / "owner.pid").write_text(str(os.getpid()))
        if self.pw is not None:
            os.chown(self.tmp, self.pw.pw_uid, self.pw.pw_gid)
        self.tmp.chmod(0o700)

    def _run_as(self) -> dict[str, Any]:
        if self.pw is None:
            return {}
        return {
            "user": self.pw.pw_uid,
            "group": self.pw.pw_gid,
            "extra_groups": [],
            "env": {**os.environ, "HOME": str(self.tmp), "USER": SYSTEM_USER},
        }

    def initdb(self) -> None:
        pwfile = self.tmp / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.pw is not None:
            os.chown(pwfile, self.pw.pw_uid, self.pw.pw_gid)
        cmd = [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres"]
        cmd += [f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--no-sync"]
        cmd += ["--auth-local=trust", "--auth-host=scram-sha-256"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.tmp, **self._run_as())
        pwfile.unlink()
        if proc.returncode:
            raise RuntimeError(f"initdb failed:\n{proc.stdout}\n{proc.stderr}")
        (self.datadir / "pg_hba.conf").write_text(PG_HBA)

    def start(self) -> None:
        for _attempt in range(5):
            self.port = free_port()
            with (self.datadir / "postgresql.conf").open("a") as f:
                f.write(CONF.format(port=self.port, sockdir=self.tmp))
            with self.log.open("ab") as log:
                # Own session: a Ctrl-C to pytest's process group must not kill
                # postgres before the fixture has stopped it cleanly.
                self.proc = subprocess.Popen(
                    [str(self.bindir / "postgres"), "-D", str(self.datadir)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.tmp,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                    **self._run_as(),
                )
            if self._wait_ready():
                return
            # Most likely the port was taken between free_port() and bind.
            self.stop()
        raise RuntimeError(f"postgres did not start; log:\n{self.log.read_text()[-4000:]}")

    def _wait_ready(self, timeout: float = 30.0) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with psycopg.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user="postgres",
                    password=self.password,
                    dbname="postgres",
                    connect_timeout=2,
                ):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # fast shutdown
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGQUIT)  # immediate shutdown
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def prepare_database(admin_dsn: str) -> None:
    """Create the suite's roles and a fresh `oversight_test` database."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for role, password in ROLE_PASSWORDS.items():
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            verb = "ALTER" if exists else "CREATE"
            # md5user must have an MD5 verifier, or md5 auth cannot work for it.
            enc = "md5" if role == "md5user" else "scram-sha-256"
            conn.execute(sql.SQL("SET password_encryption = {}").format(sql.Literal(enc)))
            conn.execute(
                sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
        conn.execute("RESET password_encryption")
        db = sql.Identifier(TEST_DB)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(db))
        for role in ROLE_PASSWORDS:
            conn.execute(sql.SQL("GRANT ALL ON DATABASE {} TO {}").format(db, sql.Identifier(role)))


def grant_schema(dsn: str) -> None:
    """Let the test roles create objects in `public` (PostgreSQL 15+ does not by default)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for role in ROLE_PASSWORDS:
            conn.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(role)))


def _from_dsn(dsn: str) -> PgCluster:
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(dsn)
    return PgCluster(
        host=str(info.get("host") or "127.0.0.1"),
        port=int(str(info.get("port") or 5432)),
        user=str(info.get("user") or os.environ.get("USER", "postgres")),
        password=str(info.get("password") or ""),
    )


@contextlib.contextmanager
def running_cluster() -> Any:
    """Yield a ready PgCluster; stop and delete what was started, even on Ctrl-C."""
    external = os.environ.get("OVERSIGHT_TEST_DSN")
    if external:
        cluster = _from_dsn(external)
        prepare_database(cluster.dsn(dbname="postgres"))
        grant_schema(cluster.dsn())
        yield cluster
        return
    bin_env = os.environ.get("OVERSIGHT_TEST_PG_BIN")
    bindir = Path(bin_env) if bin_env else pg_bindir(os.geteuid() == 0)
    reap_stale()
    local = LocalCluster(bindir)
    _LIVE.append(local)
    try:
        local.initdb()
        local.start()
        cluster = PgCluster(
            host="127.0.0.1",
            port=local.port,
            user="postgres",
            password=local.password,
            datadir=local.datadir,
            bindir=bindir,
        )
        prepare_database(cluster.dsn(dbname="postgres"))
        grant_schema(cluster.dsn())
        yield cluster
    finally:
        if local in _LIVE:
            _LIVE.remove(local)
        local.destroy()


atexit.register(stop_all)
