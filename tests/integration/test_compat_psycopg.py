"""psycopg 3 through a policy-active proxy (`compat_proxy`).

psycopg sends parameterless queries as simple Query messages and the rest
as Parse/Bind/Describe/Execute; a pipeline is many of those under one Sync,
`prepare_threshold=0` names every statement (`_pg3_N`) at its first run and
only Binds it afterwards, `binary=True` asks for binary result formats,
named cursors are DECLARE + FETCH, and COPY uses the copy sub-protocol. On
every path `ssn` must come back masked, a statement reading `notes` is
refused with 42501, and the session goes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from conftest import COMPAT_PEOPLE, COMPAT_USER, MASKED, clear_scratch
from pgcluster import PgCluster
from psycopg import errors, pq

EXPECTED = [(i, name, MASKED) for i, name, _ssn, _notes in COMPAT_PEOPLE]
BLOCKED = "oversight: blocked by compat-people"
IDS = range(2000, 2100)  # this file's rows in the shared compat.scratch
PEOPLE = "SELECT id, name, ssn FROM compat.people ORDER BY id"
DENIED = "SELECT id, notes FROM compat.people WHERE id = %s"
IDLE, INTRANS = pq.TransactionStatus.IDLE, pq.TransactionStatus.INTRANS
INERROR = pq.TransactionStatus.INERROR


def _is_blocked(e: psycopg.Error) -> bool:
    return (
        isinstance(e, errors.InsufficientPrivilege)
        and e.sqlstate == "42501"
        and (e.diag.message_primary or "").startswith(BLOCKED)
    )


async def _scratch(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    cur = await conn.execute(
        "SELECT id, label FROM compat.scratch WHERE id BETWEEN %s AND %s ORDER BY id",
        [IDS[0], IDS[-1]],
    )
    return await cur.fetchall()


@pytest.fixture
async def aconn(compat_proxy: Any, pg: PgCluster) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    clear_scratch(pg, IDS)
    dsn = compat_proxy.dsn(user=COMPAT_USER)
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    yield conn
    await conn.close()
    clear_scratch(pg, IDS)


async def test_async_masked_and_denied(aconn: psycopg.AsyncConnection[Any]) -> None:
    cur = await aconn.execute(PEOPLE)  # simple protocol
    assert await cur.fetchall() == EXPECTED
    cur = await aconn.execute("SELECT name, ssn FROM compat.people WHERE id = %s", [4])  # extended
    assert await cur.fetchall() == [("person 4", MASKED)]
    # Filters see the mask: the real value matches no row.
    cur = await aconn.execute(
        "SELECT count(*) FROM compat.people WHERE ssn = %s", [COMPAT_PEOPLE[3][2]]
    )
    assert await cur.fetchone() == (0,)
    for sql, params in (
        ("SELECT notes FROM compat.people", None),  # simple
        (DENIED, [1]),  # extended
        ("SELECT * FROM compat.people WHERE id = %s", [1]),
    ):
        with pytest.raises(errors.InsufficientPrivilege) as info:
            await aconn.execute(sql, params)
        assert _is_blocked(info.value), info.value
        assert aconn.info.transaction_status == IDLE
        cur = await aconn.execute("SELECT ssn FROM compat.people WHERE id = %s", [1])
        assert await cur.fetchone() == (MASKED,)


async def test_pipeline_masked(aconn: psycopg.AsyncConnection[Any]) -> None:
    async with aconn.pipeline():
        people = await aconn.execute(PEOPLE)
        one = await aconn.execute("SELECT name, ssn FROM compat.people WHERE id = %s", [9])
        async with aconn.cursor() as c:
            for i in IDS[:5]:
                await c.execute("INSERT INTO compat.scratch VALUES (%s, %s)", [i, f"p{i}"])
        counted = await aconn.execute(
            "SELECT count(*) FROM compat.scratch WHERE id BETWEEN %s AND %s", [IDS[0], IDS[-1]]
        )
    assert await people.fetchall() == EXPECTED
    assert await one.fetchall() == [("person 9", MASKED)]
    assert await counted.fetchone() == (5,)


async def test_pipeline_with_denied_statement(aconn: psycopg.AsyncConnection[Any]) -> None:
    with pytest.raises(errors.InsufficientPrivilege) as info:
        async with aconn.pipeline() as p:
            before = await aconn.execute("SELECT name, ssn FROM compat.people WHERE id = %s", [1])
            await p.sync()  # the first batch completes on its own
            second = await aconn.execute("SELECT ssn FROM compat.people WHERE id = %s", [2])
            await aconn.execute(DENIED, [2])
            # Skipped, like after any error in the batch: never runs.
            await aconn.execute("INSERT INTO compat.scratch VALUES (%s, 'skipped')", [IDS[10]])
            await aconn.execute("SELECT 'skipped too'")
            await p.sync()
    assert _is_blocked(info.value), info.value
    assert await before.fetchall() == [("person 1", MASKED)]
    assert await second.fetchall() == [(MASKED,)]
    assert aconn.info.transaction_status == IDLE
    assert await _scratch(aconn) == []
    # The same connection goes on, in and out of pipeline mode.
    async with aconn.pipeline():
        again = await aconn.execute("SELECT id, ssn FROM compat.people WHERE id = %s", [3])
    assert await again.fetchall() == [(3, MASKED)]
    cur = await aconn.execute(PEOPLE)
    assert await cur.fetchall() == EXPECTED


async def test_pipeline_denied_inside_transaction(aconn: psycopg.AsyncConnection[Any]) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        async with aconn.pipeline(), aconn.transaction():
            await aconn.execute("INSERT INTO compat.scratch VALUES (%s, 'rolled back')", [IDS[20]])
            await aconn.execute(DENIED, [3])
    assert aconn.info.transaction_status == IDLE
    assert await _scratch(aconn) == []
    async with aconn.transaction():
        await aconn.execute("INSERT INTO compat.scratch VALUES (%s, 'kept')", [IDS[21]])
    assert await _scratch(aconn) == [(IDS[21], "kept")]


async def test_binary_results(aconn: psycopg.AsyncConnection[Any]) -> None:
    cur = aconn.cursor(binary=True)
    await cur.execute(PEOPLE)
    assert await cur.fetchall() == EXPECTED
    assert cur.pgresult is not None
    assert [cur.pgresult.fformat(i) for i in range(3)] == [1, 1, 1]
    await cur.execute(
        "SELECT ssn, length(ssn), ssn || %s FROM compat.people WHERE id = %s", ["!", 5]
    )
    assert await cur.fetchall() == [(MASKED, len(MASKED), MASKED + "!")]
    await cur.execute("SELECT ssn FROM compat.people WHERE id = %b", [6], prepare=True)
    assert await cur.fetchall() == [(MASKED,)]
    with pytest.raises(errors.InsufficientPrivilege) as info:
        await cur.execute(DENIED, [1])
    assert _is_blocked(info.value)
    await cur.execute("SELECT id, ssn FROM compat.people WHERE id = %s", [7])
    assert await cur.fetchall() == [(7, MASKED)]


async def test_server_side_cursor(aconn: psycopg.AsyncConnection[Any]) -> None:
    await aconn.set_autocommit(False)
    async with aconn.cursor(name="compat_ssc") as cur:
        cur.itersize = 3
        await cur.execute("SELECT id, name, ssn FROM compat.people WHERE id > %s ORDER BY id", [0])
        assert await cur.fetchmany(4) == EXPECTED[:4]
        assert [row async for row in cur] == EXPECTED[4:]
    async with aconn.cursor(name="compat_scroll", scrollable=True, binary=True) as cur:
        await cur.execute(PEOPLE)
        assert await cur.fetchall() == EXPECTED
        await cur.scroll(2, mode="absolute")
        assert await cur.fetchone() == EXPECTED[2]
    await aconn.commit()
    # DECLARE over the denied column is refused and fails the transaction.
    with pytest.raises(errors.InsufficientPrivilege) as info:
        async with aconn.cursor(name="compat_denied") as cur:
            await cur.execute(DENIED, [1])
    assert _is_blocked(info.value)
    assert aconn.info.transaction_status == INERROR
    await aconn.rollback()
    async with aconn.cursor(name="compat_after") as cur:
        await cur.execute("SELECT ssn FROM compat.people WHERE id = %s", [8])
        assert await cur.fetchall() == [(MASKED,)]
    await aconn.commit()
    # WITH HOLD outlives its transaction.
    await aconn.set_autocommit(True)
    async with aconn.cursor(name="compat_hold", withhold=True) as cur:
        await cur.execute(PEOPLE)
        assert await cur.fetchmany(2) == EXPECTED[:2]
        assert await cur.fetchall() == EXPECTED[2:]


async def test_copy_to_and_from(aconn: psycopg.AsyncConnection[Any]) -> None:
    cur = aconn.cursor()
    rows = []
    async with cur.copy(f"COPY ({PEOPLE}) TO STDOUT") as copy:
        async for row in copy.rows():
            rows.append(row)
    assert rows == [(str(i), name, m) for i, name, m in EXPECTED]

    chunks = []
    async with cur.copy("COPY compat.people (id, ssn) TO STDOUT WITH (FORMAT csv)") as copy:
        async for data in copy:
            chunks.append(bytes(data))
    assert sorted(b"".join(chunks).decode().splitlines()) == sorted(
        f"{i},{MASKED}" for i in range(1, 11)
    )

    rows = []
    async with cur.copy(f"COPY ({PEOPLE}) TO STDOUT WITH (FORMAT binary)") as copy:
        copy.set_types(["int4", "text", "text"])
        async for row in copy.rows():
            rows.append(row)
    assert rows == EXPECTED

    with pytest.raises(errors.InsufficientPrivilege) as info:
        async with cur.copy("COPY (SELECT id, notes FROM compat.people) TO STDOUT") as copy:
            async for _data in copy:
                pass
    assert _is_blocked(info.value)
    assert aconn.info.transaction_status == IDLE
    cur = await aconn.execute("SELECT ssn FROM compat.people WHERE id = 1")
    assert await cur.fetchone() == (MASKED,)

    async with cur.copy("COPY compat.scratch (id, label) FROM STDIN") as copy:
        for i in IDS[30:35]:
            await copy.write_row((i, f"copied\t{i}"))
    assert cur.rowcount == 5
    async with cur.copy("COPY compat.scratch (id, label) FROM STDIN WITH (FORMAT binary)") as copy:
        copy.set_types(["int4", "text"])
        await copy.write_row((IDS[35], "binary"))
    assert cur.rowcount == 1
    assert await _scratch(aconn) == [(i, f"copied\t{i}") for i in IDS[30:35]] + [
        (IDS[35], "binary")
    ]


def _prepared_everything(dsn: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as conn:
        got = []
        for i in range(1, 11):
            cur = conn.execute("SELECT id, name, ssn FROM compat.people WHERE id = %s", [i])
            got.extend(cur.fetchall())
        out["looped"] = got
        out["plain"] = [conn.execute(PEOPLE).fetchall() == EXPECTED for _ in range(3)]
        refused = []
        for i in range(3):  # a refused Parse leaves no statement behind; each try is refused
            try:
                conn.execute(DENIED, [i + 1])
                refused.append(None)
            except psycopg.Error as e:
                refused.append(_is_blocked(e))
            cur = conn.execute("SELECT ssn FROM compat.people WHERE id = %s", [i + 1])
            refused.append(cur.fetchone())
        out["refused"] = refused
        names = conn.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '\\_pg3\\_%%'"
        ).fetchone()
        out["prepared"] = names
        # A prepared INSERT into the writable table, executed several times.
        for i in IDS[40:45]:
            conn.execute("INSERT INTO compat.scratch VALUES (%s, %s)", [i, "prepared"])
        with conn.pipeline():
            for i in IDS[45:48]:
                conn.execute("INSERT INTO compat.scratch VALUES (%s, %s)", [i, "pipelined"])
            masked = conn.execute("SELECT ssn FROM compat.people WHERE id = %s", [10])
        out["pipelined"] = masked.fetchall()
        out["scratch"] = conn.execute(
            "SELECT label, count(*) FROM compat.scratch WHERE id BETWEEN %s AND %s"
            " GROUP BY label ORDER BY label",
            [IDS[0], IDS[-1]],
        ).fetchall()
    return out


async def test_prepare_threshold_zero_sync(
    aconn: psycopg.AsyncConnection[Any], compat_proxy: Any, run_sync: Any
) -> None:
    out = await run_sync(_prepared_everything, compat_proxy.dsn(user=COMPAT_USER))
    assert out == {
        "looped": EXPECTED,
        "plain": [True] * 3,
        "refused": [True, (MASKED,)] * 3,
        # the id query, PEOPLE, the ssn query, the catalog query itself
        "prepared": (4,),
        "pipelined": [(MASKED,)],
        "scratch": [("pipelined", 3), ("prepared", 5)],
    }


async def test_prepare_threshold_zero_async(compat_proxy: Any) -> None:
    dsn = compat_proxy.dsn(user=COMPAT_USER)
    async with await psycopg.AsyncConnection.connect(dsn, prepare_threshold=0) as conn:
        for _ in range(5):
            cur = conn.cursor(binary=True)
            await cur.execute("SELECT id, name, ssn FROM compat.people WHERE id <= %s", [10])
            assert sorted(await cur.fetchall()) == EXPECTED
            with pytest.raises(errors.InsufficientPrivilege):
                await conn.execute(DENIED, [1])
            # Inside the transaction psycopg opened: the refusal fails it, as an error does.
            assert conn.info.transaction_status == INERROR
            await conn.rollback()
        cur = await conn.execute("SELECT count(*) FROM compat.people WHERE ssn = %s", [MASKED])
        assert await cur.fetchone() == (10,)


async def test_refusal_in_a_pipeline_rolls_back_its_implicit_transaction(
    compat_proxy: Any,
) -> None:
    """As with any error before Sync, statements earlier in the batch do not commit."""
    dsn = compat_proxy.dsn(user=COMPAT_USER)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("DELETE FROM compat.scratch WHERE id = %s", [IDS[90]])
        with pytest.raises(errors.InsufficientPrivilege) as info:
            async with conn.pipeline():
                await conn.execute("INSERT INTO compat.scratch VALUES (%s, 'a')", [IDS[90]])
                await conn.execute(DENIED, [1])
        assert _is_blocked(info.value)
        cur = await conn.execute("SELECT count(*) FROM compat.scratch WHERE id = %s", [IDS[90]])
        assert await cur.fetchone() == (0,)
