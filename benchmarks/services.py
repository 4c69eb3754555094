"""The servers a benchmark run talks to: a bench role and database, PgBouncer, Oversight.

Each is started as a subprocess on 127.0.0.1 and stopped by the ExitStack the
caller passes in, so a failure or Ctrl-C anywhere still stops everything. Every
wait has a deadline: the harness never hangs on a server that does not come up.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import pgcluster  # noqa: E402  (tests/ is not a package; the path is set just above)

from proxy.demo.cluster import free_port, system_user  # noqa: E402

BENCH_ROLE = "oversight_bench"
BENCH_DB = "oversight_bench"
BULK_ROWS = 1_000_000

# Plain relay: every statement kind allowed, no table rules.
RELAY_RULES = """\
version: 1
defaults:
  mode: enforce
  unknown_tables: allow
  unparsed: allow
  statements: [all]
"""

# Governed: every bench statement on pgbench_accounts gets a row filter and a mask.
GOVERNED_RULES = (
    RELAY_RULES
    + """
rules:
  - id: bench-accounts
    description: A row filter and a column mask on every read of pgbench_accounts.
    table: public.pgbench_accounts
    row_filter: "bid > 0"
    columns:
      abalance: "null"
      filler: redact
"""
)


@dataclass(frozen=True)
class Target:
    """One place pgbench and psycopg connect to, as the bench role."""

    name: str
    host: str
    port: int
    password: str
    note: str = ""
    log: Path | None = None  # the server's own log, quoted when its samples fail
    pid: int | None = None  # the server process, for its CPU time per transaction

    def dsn(self) -> str:
        return (
            f"host={self.host} port={self.port} dbname={BENCH_DB} user={BENCH_ROLE} "
            f"password={self.password} sslmode=disable connect_timeout=10"
        )

    def env(self) -> dict[str, str]:
        """libpq environment for pgbench (keeps the password off the command line)."""
        return {**os.environ, "PGPASSWORD": self.password, "PGSSLMODE": "disable"}


def make_bench_database(cluster: pgcluster.PgCluster, password: str) -> None:
    """A role owning a fresh database, so the run never touches the suite's own objects."""
    admin = cluster.dsn(dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [BENCH_ROLE]).fetchone()
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(
            sql.SQL(("ALTER" if exists else "CREATE") + " ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(BENCH_ROLE), sql.Literal(password)
            )
        )
        db, role = sql.Identifier(BENCH_DB), sql.Identifier(BENCH_ROLE)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, role))


def drop_bench_database(cluster: pgcluster.PgCluster) -> None:
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(cluster.dsn(dbname="postgres"), autocommit=True) as conn,
    ):
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB))
        )
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(BENCH_ROLE)))


def load_data(direct: Target, scale: int) -> None:
    """pgbench tables (`pgbench -i`) and the bulk-read table, loaded directly on PostgreSQL."""
    cmd = ["pgbench", "-i", "-q", "-s", str(scale), "-h", direct.host, "-p", str(direct.port)]
    cmd += ["-U", BENCH_ROLE, BENCH_DB]
    proc = subprocess.run(cmd, env=direct.env(), capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise RuntimeError(f"pgbench -i failed:\n{proc.stderr[-2000:]}")
    with psycopg.connect(direct.dsn(), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS a, now() AS t "
            f"FROM generate_series(1, {BULK_ROWS}) g"
        )
        conn.execute("VACUUM ANALYZE bulk")


def wait_connectable(
    target: Target, proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Until a real login through `target` works; raise with the log tail if it never does."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with psycopg.connect(target.dsn()) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError as e:
            last = str(e).strip()
            time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"{target.name} did not accept logins ({last}); log:\n{tail}")


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _unprivileged() -> pwd.struct_passwd | None:
    """PgBouncer refuses root; run it as the same system user as the test cluster."""
    if os.geteuid() != 0:
        return None
    return system_user(pgcluster.SYSTEM_USER)


def _run_as(pw: pwd.struct_passwd | None, home: Path) -> dict[str, Any]:
    if pw is None:
        return {}
    env = {**os.environ, "HOME": str(home), "USER": pw.pw_name}
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "env": env}


PGBOUNCER_INI = """\
[databases]
{db} = host={host} port={port} dbname={db}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {dir}/userlist.txt
pool_mode = {pool_mode}
max_client_conn = {max_client_conn}
default_pool_size = 40
server_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
"""


def start_pgbouncer(
    stack: contextlib.ExitStack,
    upstream: Target,
    *,
    name: str = "pgbouncer",
    pool_mode: str = "session",
    max_client_conn: int = 200,
) -> Target:
    """PgBouncer in front of `upstream` (session pool by default), SCRAM for clients and server."""
    exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(exe).exists():
        raise RuntimeError("pgbouncer is not installed: apt-get install -y pgbouncer")
    pw = _unprivileged()
    tmp = Path(tempfile.mkdtemp(prefix="oversight-bench-pgb-"))
    stack.callback(shutil.rmtree, tmp, True)
    port = free_port()
    ini = tmp / "pgbouncer.ini"
    ini.write_text(
        PGBOUNCER_INI.format(
            db=BENCH_DB,
            host=upstream.host,
            port=upstream.port,
            listen=port,
            dir=tmp,
            pool_mode=pool_mode,
            max_client_conn=max_client_conn,
        )
    )
    # A plain-text password lets PgBouncer do SCRAM both with the client and with PostgreSQL.
    users = tmp / "userlist.txt"
    users.write_text(f'"{BENCH_ROLE}" "{upstream.password}"\n')
    for path in (tmp, ini, users):
        if pw is not None:
            os.chown(path, pw.pw_uid, pw.pw_gid)
        path.chmod(0o700 if path.is_dir() else 0o600)
    log = tmp / "pgbouncer.log"
    with (tmp / "stderr.log").open("ab") as err:
        proc = subprocess.Popen(
            [exe, str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=tmp,
            start_new_session=True,  # a terminal Ctrl-C reaches only the harness, which stops it
            **_run_as(pw, tmp),
        )
    # SIGINT is PgBouncer's "safe shutdown" (waits for clients); SIGTERM ends it now.
    stack.callback(stop_process, proc, signal.SIGTERM)
    target = Target(name, "127.0.0.1", port, upstream.password, f"{pool_mode} pool", log, proc.pid)
    wait_connectable(target, proc, log, 20)
    return target


def oversight_command() -> list[str]:
    beside = Path(sys.executable).parent / "oversight"
    exe = str(beside) if beside.exists() else shutil.which("oversight")
    if exe:
        return [exe, "serve"]
    return [
        sys.executable,
        "-c",
        "import sys; from proxy.cli import main; sys.exit(main())",
        "serve",
    ]


@dataclass
class OversightProcess:
    target: Target
    proc: subprocess.Popen[bytes]
    audit_log: Path | None
    log: Path


def start_oversight(
    stack: contextlib.ExitStack,
    upstream: Target,
    name: str,
    rules: Path | str | None,
    audit: bool,
    startup_timeout: float = 60.0,
    pythonpath: str | None = None,
    command: list[str] | None = None,
) -> OversightProcess:
    """`oversight serve` on a free loopback port; `rules=None` means the plain-relay rule file."""
    tmp = Path(tempfile.mkdtemp(prefix=f"oversight-bench-{name.replace('+', '-')}-"))
    stack.callback(shutil.rmtree, tmp, True)
    if rules is None or isinstance(rules, str):
        text = RELAY_RULES if rules is None else rules
        rules = tmp / "rules.yaml"
        rules.write_text(text)
    audit_log = tmp / "audit.jsonl" if audit else None
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERSIGHT_")}
    env.update(
        OVERSIGHT_LISTEN=f"127.0.0.1:{port}",
        OVERSIGHT_UPSTREAM=(
            f"postgresql://{BENCH_ROLE}:{upstream.password}@{upstream.host}:{upstream.port}"
            f"/{BENCH_DB}?sslmode=disable"
        ),
        OVERSIGHT_RULES=str(rules),
        OVERSIGHT_AUDIT_LOG=str(audit_log or ""),
        OVERSIGHT_ADMIN_LISTEN="",
        OVERSIGHT_SHUTDOWN_GRACE="2",
    )
    if pythonpath is not None:  # another checkout's proxy package, for a before/after run
        env["PYTHONPATH"] = pythonpath
    log = tmp / "oversight.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command or oversight_command(),
            stdout=out,
            stderr=subprocess.STDOUT,  # to a file: a pipe nobody drains would stall the proxy
            cwd=tmp,
            env=env,
            start_new_session=True,
        )
    stack.callback(stop_process, proc, signal.SIGTERM)
    deadline = time.monotonic() + startup_timeout
    while "listening" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            tail = log.read_text(errors="replace")[-3000:]
            why = f"exited with {proc.returncode}" if proc.poll() is not None else "timed out"
            raise RuntimeError(f"oversight serve ({name}) {why} before listening:\n{tail}")
        time.sleep(0.1)
    note = f"rules {rules.name}, audit {'on' if audit else 'off'}"
    target = Target(name, "127.0.0.1", port, upstream.password, note, log, proc.pid)
    wait_connectable(target, proc, log, 20)
    return OversightProcess(target, proc, audit_log, log)


def ungoverned(server: OversightProcess) -> tuple[bool, str]:
    """Whether the rule set leaves the bench statements alone (decision `allow`, no rules)."""
    probes = ["SELECT abalance FROM pgbench_accounts WHERE aid = 1", "SELECT count(*) FROM bulk"]
    try:
        with psycopg.connect(server.target.dsn(), autocommit=True) as conn:
            for q in probes:
                conn.execute(q).fetchall()
    except psycopg.Error as e:
        return False, f"probe refused: {str(e).strip()}"
    if server.audit_log is None or not server.audit_log.exists():
        return True, "no audit log to check decisions"
    import orjson

    for line in server.audit_log.read_bytes().splitlines():
        rec = orjson.loads(line)
        bench = any(p in str(rec.get("sql")) for p in ("bulk", "pgbench"))
        if bench and (rec.get("decision") != "allow" or rec.get("rules")):
            return False, f"governed: {rec.get('decision')} by {rec.get('rules')}"
    return True, ""


def cluster_context() -> Any:
    """tests/pgcluster.py's cluster (or OVERSIGHT_TEST_DSN's server)."""
    return pgcluster.running_cluster()


def new_password() -> str:
    return secrets.token_hex(12)
