"""pg8000 (pure Python; native and DB-API) through a policy-active proxy (`compat_proxy`).

pg8000 sends every statement as an unnamed Parse/Bind/Describe/Execute +
Sync, named statements for `Connection.prepare`, and COPY through
file-like `stream` objects; its DB-API connection sends BEGIN TRANSACTION
before the first statement of each transaction. On every path `ssn` must
come back masked, a statement reading `notes` is refused with 42501, and
the session goes on.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pg8000.dbapi
import pg8000.native
import pytest
from conftest import COMPAT_PEOPLE, COMPAT_USER, MASKED, clear_scratch
from pgcluster import PgCluster

EXPECTED = [[i, name, MASKED] for i, name, _ssn, _notes in COMPAT_PEOPLE]
BLOCKED = "oversight: blocked by compat-people"
IDS = range(4000, 4100)  # this file's rows in the shared compat.scratch
PEOPLE = "SELECT id, name, ssn FROM compat.people ORDER BY id"
SCRATCH = "SELECT id, label FROM compat.scratch WHERE id BETWEEN 4000 AND 4099 ORDER BY id"


def _error(e: Exception) -> tuple[str, bool]:
    fields = e.args[0]
    return fields["C"], fields["M"].startswith(BLOCKED)


@pytest.fixture
def params(compat_proxy: Any, pg: PgCluster) -> Iterator[dict[str, Any]]:
    clear_scratch(pg, IDS)
    yield compat_proxy.params(user=COMPAT_USER)
    clear_scratch(pg, IDS)


def _native(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    con = pg8000.native.Connection(**params, timeout=20)
    try:
        out["rows"] = con.run(PEOPLE)
        out["columns"] = [c["name"] for c in con.columns or []]
        out["param"] = con.run("SELECT name, ssn FROM compat.people WHERE id = :id", id=5)
        out["probe"] = con.run(
            "SELECT count(*) FROM compat.people WHERE ssn = :s", s=COMPAT_PEOPLE[4][2]
        )
        refused = []
        for sql in (
            "SELECT notes FROM compat.people",
            "SELECT * FROM compat.people WHERE id = 1",
            "SELECT id FROM compat.people ORDER BY notes",
        ):
            try:
                con.run(sql)
                refused.append(None)
            except pg8000.native.DatabaseError as e:
                refused.append(_error(e))
            # The very next statement on the same connection works.
            refused.append(con.run("SELECT ssn FROM compat.people WHERE id = 1"))
        out["refused"] = refused
        buf = io.StringIO()
        con.run("COPY (SELECT id, ssn FROM compat.people ORDER BY id) TO STDOUT", stream=buf)
        out["copy_out"] = buf.getvalue()
        try:
            con.run("COPY (SELECT notes FROM compat.people) TO STDOUT", stream=io.StringIO())
        except pg8000.native.DatabaseError as e:
            out["copy_denied"] = _error(e)
        data = "".join(f"{i},copied {i}\n" for i in IDS[:3])
        con.run(
            "COPY compat.scratch (id, label) FROM STDIN WITH (FORMAT csv)", stream=io.StringIO(data)
        )
        out["copy_in"] = con.row_count
        out["scratch"] = con.run(SCRATCH)
        # Multi-statement simple query: refused whole when one part reads notes.
        try:
            con.run("SELECT 1; SELECT notes FROM compat.people")
        except pg8000.native.DatabaseError as e:
            out["multi_denied"] = _error(e)
        out["multi"] = con.run("SELECT 1; SELECT ssn FROM compat.people WHERE id = 2")
    finally:
        con.close()
    return out


async def test_native(params: dict[str, Any], run_sync: Any) -> None:
    out = await run_sync(_native, params)
    assert out == {
        "rows": EXPECTED,
        "columns": ["id", "name", "ssn"],
        "param": [["person 5", MASKED]],
        "probe": [[0]],
        "refused": [("42501", True), [[MASKED]]] * 3,
        "copy_out": "".join(f"{i}\t{MASKED}\n" for i in range(1, 11)),
        "copy_denied": ("42501", True),
        "copy_in": 3,
        "scratch": [[i, f"copied {i}"] for i in IDS[:3]],
        "multi_denied": ("42501", True),
        "multi": [[1], [MASKED]],
    }


def _prepared(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    con = pg8000.native.Connection(**params, timeout=20)
    try:
        ps = con.prepare("SELECT id, name, ssn FROM compat.people WHERE id = :id")
        out["looped"] = [row for i in range(1, 11) for row in ps.run(id=i)]
        ins = con.prepare("INSERT INTO compat.scratch VALUES (:id, :label)")
        for i in IDS[10:15]:
            ins.run(id=i, label="prepared")
        ins.close()
        try:
            con.prepare("SELECT notes FROM compat.people WHERE id = :id")
        except pg8000.native.DatabaseError as e:
            out["denied"] = _error(e)
        # The statement prepared before the refusal still works, still masked.
        out["again"] = ps.run(id=3)
        ps.close()
        out["scratch"] = con.run(
            "SELECT count(*) FROM compat.scratch WHERE label = 'prepared' AND id >= :a", a=IDS[0]
        )
    finally:
        con.close()
    return out


async def test_native_prepared(params: dict[str, Any], run_sync: Any) -> None:
    out = await run_sync(_prepared, params)
    assert out == {
        "looped": EXPECTED,
        "denied": ("42501", True),
        "again": [EXPECTED[2]],
        "scratch": [[5]],
    }


def _dbapi(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    con = pg8000.dbapi.connect(**params, timeout=20)
    try:
        cur = con.cursor()
        cur.execute(PEOPLE)
        out["rows"] = cur.fetchall()
        out["description"] = [d[0] for d in cur.description or []]
        cur.execute("SELECT ssn FROM compat.people WHERE id = %s AND name = %s", (8, "person 8"))
        out["param"] = cur.fetchone()
        cur.executemany(
            "INSERT INTO compat.scratch (id, label) VALUES (%s, %s)",
            [(i, f"dbapi {i}") for i in IDS[20:24]],
        )
        cur.execute("SELECT count(*) FROM compat.scratch WHERE id >= %s", (IDS[20],))
        out["in_tx"] = cur.fetchone()
        con.commit()
        # Refused inside a transaction: it fails as on any error, and the next
        # statement says so (25P02), as PostgreSQL would.
        cur.execute("INSERT INTO compat.scratch (id, label) VALUES (%s, %s)", (IDS[29], "lost"))
        try:
            cur.execute("SELECT id, notes FROM compat.people WHERE id = %s", (1,))
        except pg8000.dbapi.DatabaseError as e:
            out["denied"] = (type(e).__name__, *_error(e))
        try:
            cur.execute("SELECT 1")
        except pg8000.dbapi.DatabaseError as e:
            out["aborted"] = _error(e)[0]
        con.rollback()
        # Refused, then rolled back: the rollback works and so does what follows.
        cur.execute("INSERT INTO compat.scratch (id, label) VALUES (%s, %s)", (IDS[30], "gone"))
        try:
            cur.execute("SELECT notes FROM compat.people")
        except pg8000.dbapi.DatabaseError as e:
            out["denied_again"] = _error(e)
        con.rollback()
        cur.execute(SCRATCH)
        out["scratch"] = cur.fetchall()
        con.commit()
        con.autocommit = True
        buf = io.StringIO()
        cur.execute("COPY compat.people (id, ssn) TO STDOUT WITH (FORMAT csv)", stream=buf)
        out["copy_out"] = sorted(buf.getvalue().splitlines())
        try:
            cur.execute("SELECT count(notes) FROM compat.people")
        except pg8000.dbapi.DatabaseError as e:
            out["denied_autocommit"] = _error(e)
        cur.execute("SELECT name, ssn FROM compat.people WHERE id = %s", (10,))
        out["after"] = cur.fetchall()
    finally:
        con.close()
    return out


async def test_dbapi(params: dict[str, Any], run_sync: Any) -> None:
    out = await run_sync(_dbapi, params)
    assert out == {
        "rows": tuple(EXPECTED),
        "description": ["id", "name", "ssn"],
        "param": [MASKED],
        "denied": ("DatabaseError", "42501", True),
        "in_tx": [4],
        "aborted": "25P02",
        "denied_again": ("42501", True),
        "scratch": tuple([i, f"dbapi {i}"] for i in IDS[20:24]),
        "copy_out": sorted(f"{i},{MASKED}" for i in range(1, 11)),
        "denied_autocommit": ("42501", True),
        "after": (["person 10", MASKED],),
    }
