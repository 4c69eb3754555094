"""Running one suite phase against one target and reading back its per-test outcomes."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.peers.cluster import Server, oversight
from benchmarks.peers.phases import SUPERUSER, Phase

# Runs the `tests` package's suite factory (psycopg2's test_suite(), asyncpg's suite()),
# keeping the test ids that contain the pattern and none of the excluded substrings, and
# writes one JSON line per event, so that a hang (killed by faulthandler) still leaves
# the outcomes so far.
UNITTEST_RUNNER = """\
import faulthandler, json, sys, time, unittest
out = open(sys.argv[1], "a", buffering=1)
timeout = float(sys.argv[2])
factory = sys.argv[3]
pattern = sys.argv[4]
excludes = [e for e in sys.argv[5:] if e]
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

suite = getattr(tests, factory)()
if pattern or excludes:
    suite = unittest.TestSuite(
        t for t in ids(suite)
        if pattern in t.id() and not any(e in t.id() for e in excludes)
    )
suite.run(Result())
"""


@dataclass
class Run:
    """One suite phase against one target: outcome per test id."""

    outcomes: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""
    log_lines: Counter[str] = field(default_factory=Counter)  # proxy log: "LEVEL logger"

    def counts(self) -> Counter[str]:
        return Counter(self.outcomes.values())


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
    factory = "suite" if phase.suite == "asyncpg" else "test_suite"
    cmd = [sys.executable, str(runner), str(events), str(args.timeout), factory]
    cmd += [args.k or phase.paths[0], *phase.extra]
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
    runner = run_pytest if phase.suite == "pg8000" else run_unittest
    password = server.password_for(phase)
    with contextlib.ExitStack() as stack:
        port = server.port
        if target == "proxy":
            port = stack.enter_context(oversight(server, phase, out)).port
        elif target == "relay":
            port = stack.enter_context(forward(0, port))
        if phase.port_5432:
            stack.enter_context(forward(5432, port))
            port = 5432
        run = runner(phase, root, suite_env(port, password, phase), out, args)
    if target == "proxy":
        run.log_lines = log_lines(out / "oversight.log")
    return run


def log_lines(path: Path) -> Counter[str]:
    """The proxy log's warnings and errors, counted by level and logger.

    No suite reads the proxy's own log, so what it says there (a statement's
    text, a traceback) shows up only here.
    """
    counts: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        words = line.split(" ", 4)
        if len(words) >= 4 and words[2] in ("WARNING", "ERROR", "CRITICAL"):
            counts[f"{words[2]} {words[3].rstrip(':')}"] += 1
    return counts


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
def forward(listen_port: int, target_port: int) -> Iterator[int]:
    """A plain TCP forwarder from 127.0.0.1:listen_port (0: any free port), yielding the port.

    For suites that hard-code the port, and as the "relay" target: a hop that adds
    a second pair of socket buffers and nothing else, to tell what any proxy changes
    (timing, buffering) from what Oversight does.
    """
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", listen_port), _Relay) as srv:
        srv.target_port = target_port  # type: ignore[attr-defined]
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        try:
            yield srv.server_address[1]
        finally:
            srv.shutdown()
