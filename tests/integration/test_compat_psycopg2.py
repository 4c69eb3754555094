"""psycopg2 (libpq) through a policy-active proxy (`compat_proxy`).

psycopg2 interpolates parameters on the client and sends everything as
simple Query messages; without autocommit it sends BEGIN before the first
statement of each transaction. Named cursors are DECLARE ... CURSOR WITHOUT
HOLD FOR ... plus FETCH FORWARD n, `copy_expert` is COPY ... TO STDOUT /
FROM STDIN. As the analyst, `ssn` must come back masked on every path, a
statement reading `notes` is refused with 42501, and the session goes on.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
import pytest
from conftest import COMPAT_PEOPLE, COMPAT_USER, MASKED, clear_scratch
from pgcluster import PgCluster

EXPECTED = [(i, name, MASKED) for i, name, _ssn, _notes in COMPAT_PEOPLE]
BLOCKED = "oversight: blocked by compat-people"
IDS = range(1000, 1100)  # this file's rows in the shared compat.scratch
STATUS = psycopg2.extensions


def _connect(dsn: str) -> Any:
    return psycopg2.connect(dsn, connect_timeout=10)


def _scratch(conn: Any) -> list[tuple[int, str]]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id, label FROM compat.scratch WHERE id BETWEEN %s AND %s ORDER BY id",
            (IDS[0], IDS[-1]),
        )
        return list(cur.fetchall())


@pytest.fixture
def dsn(compat_proxy: Any, pg: PgCluster) -> Iterator[str]:
    clear_scratch(pg, IDS)
    yield compat_proxy.dsn(user=COMPAT_USER)
    clear_scratch(pg, IDS)


def _plain(dsn: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    conn = _connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, name, ssn FROM compat.people ORDER BY id")
            out["rows"] = cur.fetchall()
            out["columns"] = [d.name for d in cur.description]
            # Client-side interpolated parameters.
            cur.execute(
                "SELECT name, ssn FROM compat.people WHERE id = %s AND name LIKE %s",
                (3, "person%"),
            )
            out["param"] = cur.fetchall()
            cur.execute("SELECT ssn FROM compat.people WHERE id = %(id)s", {"id": 7})
            out["named_param"] = cur.fetchone()
            # Filters see the mask, not the value: the real ssn matches nothing.
            cur.execute("SELECT count(*) FROM compat.people WHERE ssn = %s", (COMPAT_PEOPLE[0][2],))
            out["probe"] = cur.fetchone()
            cur.execute("SELECT count(*) FROM compat.people WHERE ssn = %s", (MASKED,))
            out["probe_masked"] = cur.fetchone()
            out["status"] = conn.get_transaction_status()
        conn.commit()
    finally:
        conn.close()
    return out


async def test_plain_cursor_masked(dsn: str, run_sync: Any) -> None:
    out = await run_sync(_plain, dsn)
    assert out == {
        "rows": EXPECTED,
        "columns": ["id", "name", "ssn"],
        "param": [("person 3", MASKED)],
        "named_param": (MASKED,),
        "probe": (0,),
        "probe_masked": (10,),
        "status": STATUS.TRANSACTION_STATUS_INTRANS,
    }


def _named_cursor(dsn: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    conn = _connect(dsn)
    try:
        with conn.cursor(name="compat_named") as cur:
            cur.itersize = 3  # FETCH FORWARD 3 at a time
            cur.execute("SELECT id, name, ssn FROM compat.people ORDER BY id")
            out["first"] = cur.fetchmany(2)
            out["rest"] = list(cur)
        # A scrollable named cursor with a parameter.
        with conn.cursor(name="compat_scroll", scrollable=True) as cur:
            cur.execute("SELECT id, ssn FROM compat.people WHERE id > %s ORDER BY id", (5,))
            out["scroll_all"] = cur.fetchall()
            cur.scroll(0, mode="absolute")
            out["scroll_first"] = cur.fetchone()
        conn.commit()
        # A named cursor over the denied column: refused at DECLARE.
        cur = conn.cursor(name="compat_denied")
        try:
            cur.execute("SELECT id, notes FROM compat.people")
        except psycopg2.Error as e:
            out["denied"] = (
                type(e).__name__,
                e.pgcode,
                (e.pgerror or "").startswith(f"ERROR:  {BLOCKED}"),
            )
        conn.rollback()
        with conn.cursor(name="compat_after") as cur:
            cur.execute("SELECT name, ssn FROM compat.people WHERE id = 10")
            out["after"] = cur.fetchall()
        conn.commit()
    finally:
        conn.close()
    return out


async def test_named_server_side_cursor(dsn: str, run_sync: Any) -> None:
    out = await run_sync(_named_cursor, dsn)
    assert out == {
        "first": EXPECTED[:2],
        "rest": EXPECTED[2:],
        "scroll_all": [(i, MASKED) for i in range(6, 11)],
        "scroll_first": (6, MASKED),
        "denied": ("InsufficientPrivilege", "42501", True),
        "after": [("person 10", MASKED)],
    }


def _denied(dsn: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    conn = _connect(dsn)
    try:
        conn.autocommit = True
        cur = conn.cursor()
        for sql in (
            "SELECT notes FROM compat.people",
            "SELECT * FROM compat.people",
            "SELECT id FROM compat.people WHERE notes LIKE 'note%'",
        ):
            try:
                cur.execute(sql)
                out.setdefault("refused", []).append(None)
            except psycopg2.errors.InsufficientPrivilege as e:
                out.setdefault("refused", []).append(
                    (e.pgcode, e.diag.message_primary.startswith(BLOCKED))
                )
            # Autocommit: the very next statement on the same connection works.
            cur.execute("SELECT ssn FROM compat.people WHERE id = 1")
            out.setdefault("after", []).append(cur.fetchone())
        out["status"] = conn.get_transaction_status()
    finally:
        conn.close()
    return out


async def test_denied_column_autocommit_goes_on(dsn: str, run_sync: Any) -> None:
    out = await run_sync(_denied, dsn)
    assert out == {
        "refused": [("42501", True)] * 3,
        "after": [(MASKED,)] * 3,
        "status": STATUS.TRANSACTION_STATUS_IDLE,
    }


def _denied_in_transaction(dsn: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    conn = _connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("INSERT INTO compat.scratch VALUES (%s, %s)", (IDS[0], "before refusal"))
        try:
            cur.execute("SELECT name, notes FROM compat.people")
        except psycopg2.errors.InsufficientPrivilege as e:
            out["error"] = (e.pgcode, e.diag.message_primary.startswith(BLOCKED))
        # A refusal fails the transaction exactly as a server error does, and
        # ReadyForQuery says so: a COMMIT now could not keep the earlier insert.
        out["status"] = conn.get_transaction_status()
        try:
            cur.execute("SELECT count(*) FROM compat.people")
        except psycopg2.errors.InFailedSqlTransaction as e:
            out["in_tx"] = e.pgcode
        conn.commit()  # of a failed transaction: rolls back
        out["rolled_back"] = _scratch(conn)
        conn.commit()
        # A genuine server error, for comparison.
        cur.execute("INSERT INTO compat.scratch VALUES (%s, %s)", (IDS[1], "lost"))
        try:
            cur.execute("SELECT 1/0")
        except psycopg2.errors.DivisionByZero as e:
            out["server_error"] = e.pgcode
        out["server_status"] = conn.get_transaction_status()
        conn.rollback()
        cur.execute("SELECT id, ssn FROM compat.people WHERE id = 2")
        out["after_rollback"] = cur.fetchone()
        conn.commit()
    finally:
        conn.close()
    return out


async def test_denied_column_in_transaction_goes_on(dsn: str, run_sync: Any) -> None:
    out = await run_sync(_denied_in_transaction, dsn)
    assert out == {
        "error": ("42501", True),
        "status": STATUS.TRANSACTION_STATUS_INERROR,
        "in_tx": "25P02",
        "rolled_back": [],
        "server_error": "22012",
        "server_status": STATUS.TRANSACTION_STATUS_INERROR,
        "after_rollback": (2, MASKED),
    }


def _writes(dsn: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    conn = _connect(dsn)
    try:
        cur = conn.cursor()
        cur.executemany(
            "INSERT INTO compat.scratch (id, label) VALUES (%s, %s)",
            [(i, f"many {i}") for i in IDS[:5]],
        )
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO compat.scratch (id, label) VALUES %s",
            [(i, f"values {i}") for i in IDS[5:10]],
            page_size=2,
        )
        psycopg2.extras.execute_batch(
            cur,
            "UPDATE compat.scratch SET label = label || '!' WHERE id = %s",
            [(i,) for i in IDS[:3]],
        )
        conn.commit()
        out["committed"] = _scratch(conn)
        cur.execute("DELETE FROM compat.scratch WHERE id = %s", (IDS[0],))
        out["deleted"] = cur.rowcount
        conn.rollback()
        out["after_rollback"] = len(_scratch(conn))
        conn.commit()
        # Writes to the governed table are refused; the session goes on.
        try:
            cur.execute("UPDATE compat.people SET name = 'x' WHERE id = 1")
        except psycopg2.Error as e:
            out["write_people"] = e.pgcode
        conn.rollback()
        cur.execute("SELECT name FROM compat.people WHERE id = 1")
        out["unchanged"] = cur.fetchone()
        conn.commit()
    finally:
        conn.close()
    return out


async def test_executemany_execute_values_and_transactions(dsn: str, run_sync: Any) -> None:
    out = await run_sync(_writes, dsn)
    ids = list(IDS[:10])
    labels = [f"many {i}!" for i in ids[:3]] + [f"many {i}" for i in ids[3:5]]
    labels += [f"values {i}" for i in ids[5:]]
    assert out == {
        "committed": list(zip(ids, labels, strict=True)),
        "deleted": 1,
        "after_rollback": 10,
        "write_people": "42501",
        "unchanged": ("person 1",),
    }


def _copy(dsn: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    conn = _connect(dsn)
    try:
        conn.autocommit = True
        cur = conn.cursor()
        buf = io.StringIO()
        cur.copy_expert("COPY (SELECT id, name, ssn FROM compat.people ORDER BY id) TO STDOUT", buf)
        out["query_text"] = buf.getvalue()
        buf = io.StringIO()
        cur.copy_expert("COPY compat.people (id, ssn) TO STDOUT WITH (FORMAT csv)", buf)
        out["table_csv"] = sorted(buf.getvalue().splitlines())
        # copy_to / copy_from quote the table name: reach it through search_path.
        cur.execute("SET search_path TO compat, public")
        buf = io.StringIO()
        cur.copy_to(buf, "people", columns=("name", "ssn"))
        out["copy_to"] = sorted(buf.getvalue().splitlines())
        for sql in (
            "COPY (SELECT notes FROM compat.people) TO STDOUT",
            "COPY (SELECT * FROM compat.people) TO STDOUT WITH (FORMAT csv)",
        ):
            try:
                cur.copy_expert(sql, io.StringIO())
                out.setdefault("denied", []).append(None)
            except psycopg2.errors.InsufficientPrivilege as e:
                out.setdefault("denied", []).append(e.pgcode)
            cur.execute("SELECT 'still here'")
            out.setdefault("after", []).append(cur.fetchone())
        data = "".join(f"{i}\tcopied {i}\n" for i in IDS[20:25])
        cur.copy_expert("COPY compat.scratch (id, label) FROM STDIN", io.StringIO(data))
        out["copy_in"] = cur.rowcount
        cur.copy_from(io.StringIO(f"{IDS[25]}|piped\n"), "scratch", sep="|")
        out["copy_from"] = cur.rowcount
        out["scratch"] = _scratch(conn)
    finally:
        conn.close()
    return out


async def test_copy_expert(dsn: str, run_sync: Any) -> None:
    out = await run_sync(_copy, dsn)
    assert out == {
        "query_text": "".join(f"{i}\t{name}\t{MASKED}\n" for i, name, _m in EXPECTED),
        "table_csv": sorted(f"{i},{MASKED}" for i in range(1, 11)),
        "copy_to": sorted(f"{name}\t{MASKED}" for _i, name, _m in EXPECTED),
        "denied": ["42501", "42501"],
        "after": [("still here",)] * 2,
        "copy_in": 5,
        "copy_from": 1,
        "scratch": [(i, f"copied {i}") for i in IDS[20:25]] + [(IDS[25], "piped")],
    }
