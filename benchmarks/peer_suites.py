"""Run pg8000's and psycopg2's own test suites directly and through Oversight, and compare.

    python -m benchmarks.peer_suites                 # both suites, every phase (~10 min)
    python -m benchmarks.peer_suites --suite pg8000 --phase main -k test_copy

The suites come from the drivers' source distributions on PyPI (`pip download
--no-deps --no-binary :all:`), at the versions of the installed `pg8000` and
`psycopg2` (psycopg2-binary is fine), and run against those installed
drivers. Each phase reproduces one job of the suite's own CI on a throwaway
PostgreSQL (tests/pgcluster.py's LocalCluster, with a system PostgreSQL's
binaries when there are any: pgserver's lack hstore, TLS and GSSAPI): its
pg_hba method, password encryption and TLS. Every phase runs twice on a
freshly reset cluster, directly and then through `oversight serve` with an
open rule set (`statements: [all]`, unknown tables and unparsed statements
allowed, audit log on), with TLS to clients when the server has it, and
sslmode=require upstream then. Per-test outcomes are compared; a test whose
outcome differs must be listed in EXPLAINED with a reason, or the run exits 1.
Results: benchmarks/peer_suites.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import pgcluster  # noqa: E402  (tests/ is not a package; the path is set just above)
from serveproc import Served, start_serve  # noqa: E402

PROXY_ROLE = "oversight_peer"  # Oversight's own upstream account (catalog reads)
SUPERUSER = "postgres"  # both suites log in as this superuser
KEEP_ROLES = {SUPERUSER, PROXY_ROLE}
DATABASES = ["postgres", "psycopg2_test"]  # recreated, with hstore, before every run

OPEN_RULES = """\
version: 1
defaults:
  mode: enforce
  unknown_tables: allow
  unparsed: allow
  statements: [all]
"""

_REPLICATION = "the proxy refuses replication connections on purpose (0A000, README: Compatibility)"
_BROKEN_PIPE = (
    "a race in the test, not the proxy: directly, pg8000 writes its next query while the "
    "terminated backend is still exiting, and loopback TCP resets the connection (ECONNRESET) "
    "before pg8000 reads the FATAL; through the proxy it reads the FATAL, then EOF, and raises "
    "the 'network error' the test expects (directly too after a 0.5 s pause)"
)

# Test id -> why its outcome through the proxy differs from direct, on purpose.
# Keys are "<suite>/<phase>::<test id>", as the report prints them.
EXPLAINED: dict[str, str] = {
    **{
        f"pg8000/main::test.{api}.test_connection::test_broken_pipe_read": _BROKEN_PIPE
        for api in ("dbapi", "legacy", "native")
    },
    "pg8000/readme::test.test_readme::test_readme": (
        "its replication example (Connection(replication='database'), IDENTIFY_SYSTEM) fails: "
        + _REPLICATION
        + "; every other README example passes"
    ),
    "psycopg2/main::tests.test_types_extras.JsonTestCase.test_scs": (
        "connects with options='-c standard_conforming_strings=off', which the proxy refuses "
        "on purpose (0A000): with it off the server would read string literals differently "
        "from the policy engine"
    ),
    **{
        f"psycopg2/replication::tests.test_replication.{test}": (
            _REPLICATION + "; psycopg2's repl_connect() turns the refusal into a skip"
        )
        for test in (
            "AsyncReplicationTest.test_async_replication",
            "ReplicationTest.test_create_replication_slot",
            "ReplicationTest.test_datestyle",
            "ReplicationTest.test_keepalive",
            "ReplicationTest.test_logical_replication_connection",
            "ReplicationTest.test_physical_replication_connection",
            "ReplicationTest.test_start_and_recover_from_error",
            "ReplicationTest.test_start_on_missing_replication_slot",
            "ReplicationTest.test_start_replication_expert_sql",
            "ReplicationTest.test_stop_replication",
        )
    },
}


@dataclass(frozen=True)
class Phase:
    """One job of a suite's CI: what it runs and the server configuration it needs."""

    suite: str
    name: str
    paths: tuple[str, ...]
    hba: str = "scram-sha-256"  # method of the host lines the suite logs in through
    encryption: str = "scram-sha-256"  # password_encryption for the superuser's password
    ssl: bool = False
    extra: tuple[str, ...] = ()  # more pytest arguments
    env: tuple[tuple[str, str], ...] = ()  # more environment for the suite
    port_5432: bool = False  # the suite hard-codes localhost:5432: forward it to the target
    password: str | None = None  # the superuser password the suite hard-codes


PG8000_AUTH = ("test/dbapi/auth", "test/native/auth", "test/legacy/auth")


def _auth(kind: str) -> tuple[str, ...]:
    return tuple(f"{d}/test_{kind}.py" for d in PG8000_AUTH)


# pg8000's .github/workflows/test.yml: main-test, auth-test (4 methods), ssl-test (2).
PHASES = [
    Phase(
        "pg8000",
        "main",
        ("test",),
        extra=(*tuple(f"--ignore={d}" for d in PG8000_AUTH), "--ignore=test/test_readme.py"),
    ),
    Phase("pg8000", "auth-md5", _auth("md5"), hba="md5", encryption="md5"),
    Phase("pg8000", "auth-password", _auth("password"), hba="password"),
    Phase("pg8000", "auth-scram-sha-256", _auth("scram-sha-256")),
    Phase("pg8000", "auth-gss", _auth("gss"), hba="gss"),
    Phase("pg8000", "ssl-md5", _auth("md5_ssl"), hba="md5", encryption="md5", ssl=True),
    Phase("pg8000", "ssl-scram-sha-256", _auth("scram-sha-256_ssl"), ssl=True),
    # The README's doctests (the static-test job): localhost:5432, password cpsnow, TLS.
    Phase(
        "pg8000",
        "readme",
        ("test/test_readme.py",),
        ssl=True,
        env=(("LOGNAME", SUPERUSER),),
        port_5432=True,
        password="cpsnow",
    ),
    # psycopg2's own runner: tests/__init__.py's test_suite(), as `make check` does;
    # for psycopg2 `paths` filters test ids by substring ("" runs them all).
    Phase("psycopg2", "main", ("",)),
    # Its replication tests run only with PSYCOPG2_TEST_REPL_DSN set ("": the test DSN).
    Phase(
        "psycopg2",
        "replication",
        ("tests.test_replication.",),
        env=(("PSYCOPG2_TEST_REPL_DSN", ""),),
    ),
]

PG_HBA = """\
# Written by benchmarks/peer_suites.py for phase {phase}.
local all all trust
host all {proxy_role} 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 {method}
host replication all 127.0.0.1/32 {method}
"""

CONF = """
# Appended by benchmarks/peer_suites.py.
ssl = off
ssl_cert_file = '{cert}'
ssl_key_file = '{key}'
max_prepared_transactions = 10
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
"""

# Runs psycopg2's test_suite() and writes one JSON line per event, so that a
# hang (killed by faulthandler) still leaves the outcomes so far.
UNITTEST_RUNNER = """\
import faulthandler, json, sys, time, unittest
out = open(sys.argv[1], "a", buffering=1)
timeout = float(sys.argv[2])
pattern = sys.argv[3] if len(sys.argv) > 3 else ""
import tests

def ids(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from ids(t)
        else:
            yield t

class Result(unittest.TestResult):
    def startTest(self, test):
        super().startTest(test)
        faulthandler.dump_traceback_later(timeout, exit=True)
        out.write(json.dumps({"start": test.id()}) + "\\n")
    def stopTest(self, test):
        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)
    def _emit(self, test, outcome, detail=""):
        tid = test.id() if hasattr(test, "id") else str(test)
        out.write(json.dumps({"id": tid, "outcome": outcome, "detail": detail[-3000:]}) + "\\n")
    def addSuccess(self, test):
        super().addSuccess(test); self._emit(test, "passed")
    def addFailure(self, test, err):
        super().addFailure(test, err); self._emit(test, "failed", self.failures[-1][1])
    def addError(self, test, err):
        super().addError(test, err); self._emit(test, "error", self.errors[-1][1])
    def addSkip(self, test, reason):
        super().addSkip(test, reason); self._emit(test, "skipped", reason)
    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err); self._emit(test, "skipped", "expected failure")
    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test); self._emit(test, "failed", "unexpected success")

suite = tests.test_suite()
if pattern:
    suite = unittest.TestSuite(t for t in ids(suite) if pattern in t.id())
suite.run(Result())
"""


@dataclass
class Run:
    """One suite phase against one target: outcome per test id."""

    outcomes: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""

    def counts(self) -> Counter[str]:
        return Counter(self.outcomes.values())


# ---------------------------------------------------------------- sources


def driver_version(suite: str) -> str:
    dist = {"pg8000": "pg8000", "psycopg2": "psycopg2-binary"}[suite]
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return metadata.version(suite)  # a source-built psycopg2


def fetch_source(suite: str, version: str, cache: Path) -> Path:
    """The unpacked sdist of `suite`=`version` in `cache`, downloaded once."""
    root = cache / f"{suite}-{version}"
    if root.is_dir():
        return root
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["-d", str(cache), f"{suite}=={version}"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    with tarfile.open(cache / f"{suite}-{version}.tar.gz") as tar:
        tar.extractall(cache, filter="data")
    return root


# ---------------------------------------------------------------- the server


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


# ---------------------------------------------------------------- running the suites


def suite_env(port: int, password: str, phase: Phase) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OVERSIGHT_", "PG", "PSYCOPG2_")) and k != "PYTHONPATH"
    }
    env.update(
        PGHOST="127.0.0.1",
        PGPORT=str(port),
        PGUSER=SUPERUSER,
        PGPASSWORD=password,
        PSYCOPG2_TESTDB="psycopg2_test",
        PSYCOPG2_TESTDB_HOST="127.0.0.1",
        PSYCOPG2_TESTDB_PORT=str(port),
        PSYCOPG2_TESTDB_USER=SUPERUSER,
        PSYCOPG2_TESTDB_PASSWORD=password,
    )
    env.update(phase.env)
    return env


def run_pytest(
    phase: Phase, root: Path, env: dict[str, str], out: Path, args: argparse.Namespace
) -> Run:
    xml = out / "junit.xml"
    # -W error as the suite's CI, except for unraisable-exception warnings (an unclosed
    # socket left by one test fails whichever later test the garbage collector hits).
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-W", "error"]
    cmd += ["-W", "ignore::pytest.PytestUnraisableExceptionWarning"]
    cmd += ["--junitxml", str(xml), "--timeout", str(args.timeout), "--benchmark-disable"]
    cmd += [*phase.paths, *phase.extra]
    if args.k:
        cmd += ["-k", args.k]
    run = _run(cmd, root, env, out, args)
    if not xml.exists():
        run.note += " (no junit xml)"
        return run
    for case in ET.parse(xml).getroot().iter("testcase"):
        tid = f"{case.get('classname')}::{case.get('name')}"
        tags = {child.tag: child for child in case}
        outcome = next(
            (
                name
                for tag, name in [("failure", "failed"), ("error", "error"), ("skipped", "skipped")]
                if tag in tags
            ),
            "passed",
        )
        run.outcomes[tid] = outcome
        for tag in ("failure", "error", "skipped"):
            if tag in tags:
                el = tags[tag]
                run.details[tid] = ((el.get("message") or "") + "\n" + (el.text or ""))[-3000:]
                break
    return run


def run_unittest(
    phase: Phase, root: Path, env: dict[str, str], out: Path, args: argparse.Namespace
) -> Run:
    events = out / "events.jsonl"
    runner = out / "runner.py"
    runner.write_text(UNITTEST_RUNNER)
    cmd = [sys.executable, str(runner), str(events), str(args.timeout), args.k or phase.paths[0]]
    env = {**env, "PYTHONPATH": str(root)}
    run = _run(cmd, root, env, out, args)
    started = None
    for line in events.read_text().splitlines() if events.exists() else []:
        ev = json.loads(line)
        if "start" in ev:
            started = ev["start"]
            continue
        run.outcomes[ev["id"]] = ev["outcome"]
        run.details[ev["id"]] = ev["detail"]
        if ev["id"] == started:
            started = None
    if started is not None and started not in run.outcomes:  # the runner died in it
        run.outcomes[started] = "error"
        run.details[started] = "runner died (timeout?): see " + str(out / "output.txt")
    return run


def _run(
    cmd: list[str], root: Path, env: dict[str, str], out: Path, args: argparse.Namespace
) -> Run:
    t0 = time.monotonic()
    log = out / "output.txt"
    with log.open("wb") as f:
        try:
            proc = subprocess.run(
                cmd,
                cwd=root,
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=args.suite_timeout,
            )
            note = f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            note = f"killed after {args.suite_timeout}s"
    return Run(seconds=time.monotonic() - t0, note=note)


def run_phase(
    server: Server, phase: Phase, root: Path, target: str, out: Path, args: argparse.Namespace
) -> Run:
    out.mkdir(parents=True, exist_ok=True)
    server.reset(phase)
    runner = run_unittest if phase.suite == "psycopg2" else run_pytest
    password = server.password_for(phase)
    with contextlib.ExitStack() as stack:
        port = server.port
        if target == "proxy":
            port = stack.enter_context(oversight(server, phase, out)).port
        if phase.port_5432:
            stack.enter_context(forward(5432, port))
            port = 5432
        return runner(phase, root, suite_env(port, password, phase), out, args)
    raise AssertionError("unreachable")


class _Relay(socketserver.BaseRequestHandler):
    """Copies bytes both ways between a client and the forwarder's target port."""

    def handle(self) -> None:
        target = self.server.target_port  # type: ignore[attr-defined]
        with socket.create_connection(("127.0.0.1", target)) as up:
            other = threading.Thread(target=_copy, args=(up, self.request), daemon=True)
            other.start()
            _copy(self.request, up)
            other.join()


def _copy(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def forward(listen_port: int, target_port: int) -> Iterator[None]:
    """A plain TCP forwarder from 127.0.0.1:listen_port, for suites that hard-code the port."""
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", listen_port), _Relay) as srv:
        srv.target_port = target_port  # type: ignore[attr-defined]
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        try:
            yield
        finally:
            srv.shutdown()


# ---------------------------------------------------------------- report


def fmt_counts(run: Run | None) -> str:
    if run is None:
        return "-"
    c = run.counts()
    return f"{c['passed']}/{c['failed']}/{c['error']}/{c['skipped']}"


def differences(direct: Run, proxy: Run) -> list[str]:
    ids = sorted(set(direct.outcomes) | set(proxy.outcomes))
    return [t for t in ids if direct.outcomes.get(t, "missing") != proxy.outcomes.get(t, "missing")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--suite", action="append", choices=["pg8000", "psycopg2"])
    ap.add_argument("--phase", action="append", help="phase name(s), e.g. main, auth-md5")
    ap.add_argument("--target", action="append", choices=["direct", "proxy"])
    ap.add_argument("-k", help="pytest -k expression (pg8000) / test id substring (psycopg2)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per test")
    ap.add_argument("--suite-timeout", type=float, default=1800, help="seconds per suite run")
    ap.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "oversight-peer-suites"
    )
    ap.add_argument("--json", type=Path, help="write every outcome to this file")
    args = ap.parse_args(argv)
    suites = args.suite or ["pg8000", "psycopg2"]
    targets = args.target or ["direct", "proxy"]
    phases = [p for p in PHASES if p.suite in suites and (not args.phase or p.name in args.phase)]
    args.cache.mkdir(parents=True, exist_ok=True)
    versions = {s: driver_version(s) for s in suites}
    roots = {s: fetch_source(s, versions[s], args.cache) for s in suites}
    results_dir = args.cache / "results" / time.strftime("%Y%m%d-%H%M%S")
    t0 = time.monotonic()

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    server = Server(pg_bindir())
    runs: dict[tuple[str, str, str], Run] = {}
    try:
        server.start()
        for phase in phases:
            for target in targets:
                out = results_dir / phase.suite / phase.name / target
                run = run_phase(server, phase, roots[phase.suite], target, out, args)
                runs[phase.suite, phase.name, target] = run
                print(
                    f"{phase.suite} {phase.name} {target}: {fmt_counts(run)} "
                    f"(passed/failed/errors/skipped) in {run.seconds:.0f}s, {run.note}",
                    flush=True,
                )
    finally:
        server.destroy()
    wall = time.monotonic() - t0
    return report(phases, versions, runs, targets, wall, results_dir, args)


def report(
    phases: list[Phase],
    versions: dict[str, str],
    runs: dict[tuple[str, str, str], Run],
    targets: list[str],
    wall: float,
    results_dir: Path,
    args: argparse.Namespace,
) -> int:
    print()
    print("| suite | version | phase | direct p/f/e/s | proxy p/f/e/s | differences |")
    print("|---|---|---|---|---|---|")
    unexplained: list[str] = []
    explained: list[str] = []
    seen: set[str] = set()
    for phase in phases:
        direct = runs.get((phase.suite, phase.name, "direct"))
        proxy = runs.get((phase.suite, phase.name, "proxy"))
        diffs = differences(direct, proxy) if direct and proxy else []
        print(
            f"| {phase.suite} | {versions[phase.suite]} | {phase.name} | {fmt_counts(direct)} "
            f"| {fmt_counts(proxy)} | {len(diffs)} |"
        )
        for tid in diffs:
            key = f"{phase.suite}/{phase.name}::{tid}"
            seen.add(key)
            assert direct is not None and proxy is not None
            line = (
                f"{key}: direct {direct.outcomes.get(tid, 'missing')}, "
                f"proxy {proxy.outcomes.get(tid, 'missing')}"
            )
            if key in EXPLAINED:
                explained.append(f"{line}\n    explained: {EXPLAINED[key]}")
            else:
                why = proxy.details.get(tid) or direct.details.get(tid) or ""
                unexplained.append(line + "\n" + textwrap.indent(why.strip()[-1500:], "    "))
    if explained:
        print("\nExplained differences:")
        print("\n".join(explained))
    if unexplained:
        print("\nUNEXPLAINED differences:")
        print("\n".join(unexplained))
    full = set(targets) == {"direct", "proxy"} and not args.k
    stale = sorted(
        k
        for k in EXPLAINED
        if full and k not in seen and any(k.startswith(f"{p.suite}/{p.name}::") for p in phases)
    )
    if stale:
        print("\nExplained entries that did not differ this run (racy ones may not; else remove):")
        print("\n".join(stale))
    print(f"\nwall time {wall / 60:.1f} min; logs and junit files under {results_dir}")
    if args.json:
        data = {
            f"{s} {p} {t}": {"counts": dict(r.counts()), "outcomes": r.outcomes, "note": r.note}
            for (s, p, t), r in runs.items()
        }
        args.json.write_text(json.dumps({"versions": versions, "runs": data}, indent=1))
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
