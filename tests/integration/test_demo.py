"""`oversight demo` end to end: it starts, the printed statements behave as printed, Ctrl-C
stops everything.

The demo runs as a real subprocess (`python -m proxy.cli demo`) at a small
scale with its own embedded PostgreSQL; the test reads its banner, runs each
user's printed statements through the printed connection strings (psycopg,
and psql for the literal command line), checks /metrics on the printed admin
address, then sends SIGINT and checks that nothing is left running.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

SCALE = "0.05"  # 5,000 people: each region still holds more rows than the 1,000-row cap
START_TIMEOUT = 90.0


@dataclass
class Shown:
    """What the banner printed for one user."""

    psql: str
    dsn: str
    examples: list[tuple[str, str]] = field(default_factory=list)  # (what it shows, SQL)


@dataclass
class Banner:
    text: str
    datadir: Path
    metrics_url: str
    users: dict[str, Shown]
    audit_log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _read_until(proc: DemoProcess, marker: str, timeout: float) -> str:
    """Output up to `marker`, read from the raw pipe (a buffered readline would hide
    lines already read from select())."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
            if marker.encode() in out:
                return out.decode()
        elif proc.poll() is not None:
            break
    raise AssertionError(f"no {marker!r} from the demo:\n{out.decode()}\n{proc.log_text()}")


def _parse(text: str) -> Banner:
    users: dict[str, Shown] = {}
    current: Shown | None = None
    what = ""
    for line in text.splitlines():
        if m := re.match(r'^  psql "(postgresql://(\w+):[^"]+)"$', line):
            current = users[m.group(2)] = Shown(psql=line.strip(), dsn=m.group(1))
        elif current is not None and (m := re.match(r"^    -- (.+)$", line)):
            what = m.group(1)
        elif current is not None and (m := re.match(r"^    (\S.*;)$", line)):
            current.examples.append((what, m.group(1)))
    datadir = re.search(r"^  data:\s+(\S+)", text, re.M)
    metrics = re.search(r"^  metrics:\s+(\S+)", text, re.M)
    audit = re.search(r"^  audit log:\s+(\S+)", text, re.M)
    assert datadir and metrics and audit, text
    return Banner(text, Path(datadir.group(1)), metrics.group(1), users, Path(audit.group(1)))


def _processes_mentioning(needle: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if needle in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


class DemoProcess(subprocess.Popen[str]):
    """`python -m proxy.cli demo ...` with stdout piped and stderr in a file.

    A file, not a pipe, for stderr: nobody reads it while the tests run, and a
    full pipe would stall the demo.
    """

    def __init__(self, *args: str) -> None:
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in kill_all
        self.log_tail = ""
        super().__init__(
            [sys.executable, "-m", "proxy.cli", "demo", *args],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # a stray demo can be killed as a group
        )

    def log_text(self) -> str:
        if self.log.closed:
            return self.log_tail
        self.log.seek(0)
        return self.log.read()[-4000:]

    def stop(self, timeout: float = 30) -> str:
        """SIGINT, as Ctrl-C; the rest of stdout. Kills the group if it does not stop."""
        try:
            self.send_signal(signal.SIGINT)
            out, _ = self.communicate(timeout=timeout)
            return out
        finally:
            self.log_tail = self.log_text()
            self.kill_all()

    def kill_all(self) -> None:
        if self.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.wait()
        self.log.close()


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[DemoProcess, Banner]]:
    proc = DemoProcess("--scale", SCALE, "--listen", f"127.0.0.1:{_free_port()}")
    try:
        text = _read_until(proc, "Press Ctrl-C", START_TIMEOUT)
        yield proc, _parse(text)
    finally:
        proc.kill_all()


def _run(dsn: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        return conn.execute(sql).fetchall()


def _refused(dsn: str, sql: str) -> psycopg.Error:
    """Run a statement that must fail; check the session stays usable afterwards."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute(sql).fetchall()
        assert conn.execute("SELECT 1").fetchone() == (1,)
    return err.value


def test_banner_shows_four_users_with_their_examples(demo: tuple[object, Banner]) -> None:
    _, banner = demo
    assert set(banner.users) == {"alice", "bob", "carol", "dave"}
    shown = " ".join(w for u in banner.users.values() for w, _ in u.examples)
    for behaviour in ("row filter", "mask", "block", "cut-off", "canary"):
        assert behaviour in shown
    assert {n: len(u.examples) for n, u in banner.users.items()} == {
        "alice": 3,
        "bob": 3,
        "carol": 4,  # and the canary
        "dave": 3,
    }


def test_alice_row_filter_masks_block_cutoff(demo: tuple[object, Banner]) -> None:
    alice = demo[1].users["alice"]
    (w1, filtered), (w2, blocked), (w3, cutoff) = alice.examples
    assert "row filter" in w1 and "mask" in w1
    rows = _run(alice.dsn, filtered)
    assert len(rows) == 5
    for full_name, region, ssn, phone, dob, email in rows:
        assert region == "north"
        assert ssn == "****"
        assert re.fullmatch(r"\*\*\*\d{4}", phone)
        assert (dob.month, dob.day) == (1, 1)
        assert re.fullmatch(r"[0-9a-f]{64}", email)
        assert full_name and " " in full_name
    assert "block" in w2
    err = _refused(alice.dsn, blocked)
    assert err.sqlstate == "42501"
    assert str(err).startswith("oversight: blocked by cases-by-region")
    assert "cut-off" in w3
    err = _refused(alice.dsn, cutoff)
    assert err.sqlstate == "54000"
    assert "oversight: result limit of 1000 rows reached (analyst-result-cap)" in str(err)


def test_bob_sees_south_only_masked_and_star_blocked(demo: tuple[object, Banner]) -> None:
    bob = demo[1].users["bob"]
    (w1, counts), (w2, masked), (w3, star) = bob.examples
    assert "row filter" in w1
    rows = _run(bob.dsn, counts)
    assert [r[0] for r in rows] == ["south"] and rows[0][1] > 1000
    assert "mask" in w2
    for _name, ssn, email in _run(bob.dsn, masked):
        assert ssn == "****" and re.fullmatch(r"[0-9a-f]{64}", email)
    assert "block" in w3
    err = _refused(bob.dsn, star)
    assert err.sqlstate == "42501" and "cases-by-region" in str(err)


def test_carol_sees_all_regions_partial_ssn_internal_blocked(demo: tuple[object, Banner]) -> None:
    carol = demo[1].users["carol"]
    (_, counts), (w2, masked), (w3, internal), _ = carol.examples
    rows = _run(carol.dsn, counts)
    assert [r[0] for r in rows] == ["east", "north", "south", "west"]
    assert sum(r[1] for r in rows) == 5000 + 2  # and the two canary people
    assert "mask" in w2
    for _name, ssn, phone in _run(carol.dsn, masked):
        assert re.fullmatch(r"\*\*\*\d{4}", ssn)
        assert re.fullmatch(r"\+1-555-\d{3}-\d{4}", phone)  # not masked for supervisors
    assert "block" in w3
    err = _refused(carol.dsn, internal)
    assert err.sqlstate == "42501" and "internal-schema" in str(err)


def test_carols_lookup_of_a_canary_person_writes_a_canary_event(
    demo: tuple[object, Banner],
) -> None:
    banner = demo[1]
    carol = banner.users["carol"]
    what, lookup = carol.examples[3]
    assert "canary" in what and "900001" in lookup
    assert _run(carol.dsn, lookup) == [("Dana Whitlock", "+1-555-010-4320")]

    def canary_events() -> list[dict[str, Any]]:
        lines = banner.audit_log.read_bytes().splitlines()
        return [e for e in map(json.loads, lines) if e["event"] == "canary"]

    deadline = time.monotonic() + 15  # the record is flushed before the reply; poll anyway
    while not canary_events() and time.monotonic() < deadline:
        time.sleep(0.1)
    (event,) = canary_events()
    assert (event["user"], event["canary"], event["how"]) == ("carol", "decoy-people", "looked_up")
    assert "900001" not in banner.audit_log.read_text()


def test_dave_is_a_supervisor_by_a_postgresql_role(demo: tuple[object, Banner]) -> None:
    """dave has no `users:` entry: the demo's `GRANT supervisors TO dave` is his group."""
    dave = demo[1].users["dave"]
    (w1, counts), (w2, masked), (w3, internal) = dave.examples
    assert "block" in w3
    assert "groups from the upstream" in w1
    rows = _run(dave.dsn, counts)
    assert [r[0] for r in rows] == ["east", "north", "south", "west"]
    assert "mask" in w2
    for _name, ssn in _run(dave.dsn, masked):
        assert re.fullmatch(r"\*\*\*\d{4}", ssn)
    err = _refused(dave.dsn, internal)
    assert err.sqlstate == "42501" and "internal-schema" in str(err)


def test_printed_psql_command_line_works(demo: tuple[object, Banner]) -> None:
    psql = shutil.which("psql")
    assert psql, "psql is needed (apt-get install postgresql-client)"
    alice = demo[1].users["alice"]
    cmd = [*shlex.split(alice.psql), "-X", "-v", "ON_ERROR_STOP=1", "-c", alice.examples[1][1]]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert run.returncode != 0
    assert "ERROR:  oversight: blocked by cases-by-region" in run.stderr
    cmd = [*shlex.split(alice.psql), "-X", "-At", "-c", "SELECT count(*) FROM people"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert 1000 < int(run.stdout) < 5000  # the north region only


def test_metrics_count_the_demo_statements(demo: tuple[object, Banner]) -> None:
    alice = demo[1].users["alice"]
    before = urllib.request.urlopen(demo[1].metrics_url, timeout=10).read().decode()
    _refused(alice.dsn, alice.examples[1][1])
    after = urllib.request.urlopen(demo[1].metrics_url, timeout=10).read().decode()

    def value(text: str, name: str) -> float:
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    blocks = 'oversight_blocks_total{rule="cases-by-region"}'
    assert value(after, blocks) == value(before, blocks) + 1
    assert value(after, 'oversight_rows_total{user="alice"}') > 0


def test_sigint_stops_everything(demo: tuple[DemoProcess, Banner]) -> None:
    proc, banner = demo
    port = int(banner.users["alice"].dsn.rsplit(":", 1)[1].split("/")[0])
    assert banner.datadir.exists()
    out = proc.stop()
    assert proc.returncode == 0, proc.log_text()
    assert "stopped." in out
    assert not _processes_mentioning(str(banner.datadir))
    assert not banner.datadir.parent.exists()  # no --keep: the run leaves nothing behind
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_keep_reuses_the_data_dir() -> None:
    """--keep with --data-dir: the second run skips the load; the directory survives both."""
    # Not under pytest's tmp_path: a concurrent pytest resets its root to 0700, and the
    # server runs as another user when the tests run as root.
    base = Path(tempfile.mkdtemp(prefix="oversight-demo-keep-"))
    try:
        _keep_twice(base / "kept")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _keep_twice(datadir: Path) -> None:
    outputs = []
    for _run in range(2):
        proc = DemoProcess(
            "--keep", "--scale", "0.02", "--data-dir", str(datadir),
            "--listen", f"127.0.0.1:{_free_port()}",
        )  # fmt: skip
        try:
            outputs.append(_read_until(proc, "Press Ctrl-C", START_TIMEOUT))
        finally:
            proc.stop()
        assert proc.returncode == 0, proc.log_text()
        assert (datadir / "PG_VERSION").exists()
        assert not _processes_mentioning(str(datadir))
    assert "loaded 5,050 rows" in outputs[0] and "reusing" not in outputs[0]  # 2 canaries
    assert "reusing the data set loaded earlier" in outputs[1] and "loaded 5,050" not in outputs[1]
    assert "kept for next time" in outputs[1]
    assert (datadir.parent / "kept-oversight" / "audit.jsonl").exists()


def test_a_taken_port_is_one_clear_line_and_nothing_left() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = DemoProcess("--scale", "0.02", "--listen", f"127.0.0.1:{port}")
        try:
            out, _ = proc.communicate(timeout=START_TIMEOUT)
        finally:
            log = proc.log_text()
            proc.kill_all()
    assert proc.returncode == 1
    assert f"oversight demo: cannot listen on 127.0.0.1:{port}" in log
    datadir = re.search(r"starting PostgreSQL \S+ in (\S+)", out)
    assert datadir, out
    assert not Path(datadir.group(1)).parent.exists()
    assert not _processes_mentioning(datadir.group(1))


# -- the data set itself, loaded into the suite's shared PostgreSQL -------------------


@pytest.fixture(scope="module")
async def demo_db(pg: Any) -> AsyncIterator[str]:
    import asyncpg

    admin = await asyncpg.connect(pg.dsn(dbname="postgres"))
    await admin.execute("DROP DATABASE IF EXISTS oversight_demo_data WITH (FORCE)")
    await admin.execute("CREATE DATABASE oversight_demo_data")
    try:
        yield pg.dsn(dbname="oversight_demo_data")
    finally:
        await admin.execute("DROP DATABASE IF EXISTS oversight_demo_data WITH (FORCE)")
        await admin.close()


CHECKSUM = """
SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM (
    SELECT p::text AS t FROM public.people p UNION ALL
    SELECT c::text FROM public.cases c UNION ALL
    SELECT o::text FROM public.officers o UNION ALL
    SELECT n::text FROM internal.audit_notes n) AS all_rows(t)
"""


async def test_data_set_is_deterministic_and_consistent(demo_db: str) -> None:
    import asyncpg

    from proxy.demo import data

    conn = await asyncpg.connect(demo_db)
    try:
        seen: list[tuple[str, int, int]] = []
        sizes = await data.load(conn, 0.02, lambda *a: seen.append(a))
        first = await conn.fetchval(CHECKSUM)
        await data.load(conn, 0.02)
        assert await conn.fetchval(CHECKSUM) == first  # same rows on every run
        assert (sizes.people, sizes.cases) == (2000, 3000)
        assert seen[-1] == ("internal.audit_notes", sizes.audit_notes, sizes.audit_notes)
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM people) AS people, (SELECT count(*) FROM cases) AS cases,"
            " (SELECT count(*) FROM officers) AS officers,"
            " (SELECT count(*) FROM internal.audit_notes) AS notes"
        )
        people = sizes.people + sizes.canaries
        assert tuple(counts) == (people, sizes.cases, sizes.officers, sizes.audit_notes)
        assert sizes.total == sum(counts)
        regions = await conn.fetch("SELECT region, count(*) FROM people GROUP BY 1 ORDER BY 1")
        assert [r[0] for r in regions] == ["east", "north", "south", "west"]
        assert min(r[1] for r in regions) > sizes.people / 4 * 0.8  # roughly even
        # A case belongs to its person's region and to an officer of that region.
        assert not await conn.fetchval(
            "SELECT count(*) FROM cases c JOIN people p ON p.id = c.person_id"
            " JOIN officers o ON o.id = c.officer_id"
            " WHERE c.region <> p.region OR o.region <> c.region"
        )
        assert await conn.fetchval(
            "SELECT bool_and(ssn ~ '^\\d{3}-\\d{2}-\\d{4}$' AND phone ~ '^\\+1-555-\\d{3}-\\d{4}$'"
            " AND email LIKE '%@%') FROM people"
        )
        # Notes quote personal data: the reason analysts are denied them.
        assert await conn.fetchval(
            "SELECT count(*) FROM cases c JOIN people p ON p.id = c.person_id"
            " WHERE c.notes LIKE '%' || p.ssn || '%'"
        )
        assert await data.loaded_marker(conn) == data.marker(0.02)
    finally:
        await conn.close()
