"""COPY through a policy-active proxy (`compat_proxy`), with real clients and server.

- Every form of COPY options PostgreSQL accepts to or from the client parses: the
  parenthesised list without WITH (what asyncpg writes), and the legacy words
  (`CSV HEADER`, `BINARY`, `DELIMITER AS ','`, `COPY BINARY t`...). When the proxy
  rewrites such a COPY (a governed table or query), the text it sends upstream
  must be accepted by PostgreSQL and give the same bytes as the same options on
  the masked data; the statements outside that grammar are refused.
- `COPY compat.people TO STDOUT` (every column) and a column list naming `notes`
  are refused like `SELECT *` and `SELECT notes`; the connection goes on.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import psycopg
import pytest
from conftest import COMPAT_PEOPLE, COMPAT_USER, MASKED, clear_scratch
from pgcluster import PgCluster
from psycopg import errors

DENIED = "oversight: blocked by compat-people: column compat.people.notes is denied"
NOT_UNDERSTOOD = "oversight: statement not understood: COPY: "
IDS = range(6000, 6100)  # this file's rows in the shared compat.scratch
# What the analyst may see: the same rows with ssn masked.
MASKED_PEOPLE = "SELECT id, name, '****'::text AS ssn FROM compat.people"


@pytest.fixture
def dsn(compat_proxy: Any, pg: PgCluster) -> Iterator[str]:
    clear_scratch(pg, IDS)
    yield compat_proxy.dsn(user=COMPAT_USER)
    clear_scratch(pg, IDS)


@pytest.fixture
async def apg(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(dsn, timeout=10)
    yield c
    await c.close(timeout=10)


@pytest.fixture
async def pconn(dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    c = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    yield c
    await c.close()


async def _copy_out(conn: psycopg.AsyncConnection[Any], sql: str) -> bytes:
    chunks = []
    async with conn.cursor() as cur, cur.copy(sql) as copy:
        async for data in copy:
            chunks.append(bytes(data))
    return b"".join(chunks)


async def _scratch(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    cur = await conn.execute(
        "SELECT id, label FROM compat.scratch WHERE id BETWEEN %s AND %s ORDER BY id",
        [IDS[0], IDS[-1]],
    )
    return await cur.fetchall()


async def _still_masked(conn: psycopg.AsyncConnection[Any]) -> None:
    cur = await conn.execute("SELECT ssn FROM compat.people WHERE id = 3")
    assert await cur.fetchone() == (MASKED,)


# asyncpg writes its options without WITH: `... TO STDOUT (FORMAT 'csv')`.


async def test_asyncpg_copy_records_to_table(apg: asyncpg.Connection) -> None:
    # COPY "compat"."scratch"("id","label") FROM STDIN (FORMAT binary)
    records = [(i, f"record {i}") for i in IDS[:5]]
    status = await apg.copy_records_to_table(
        "scratch", schema_name="compat", records=records, columns=["id", "label"]
    )
    assert status == "COPY 5"
    got = await apg.fetch(
        "SELECT id, label FROM compat.scratch WHERE id BETWEEN $1 AND $2 ORDER BY id",
        IDS[0],
        IDS[-1],
    )
    assert [tuple(r) for r in got] == records


async def test_asyncpg_copy_from_query_csv_is_masked(apg: asyncpg.Connection) -> None:
    out = io.BytesIO()
    status = await apg.copy_from_query(
        "SELECT id, ssn FROM compat.people", output=out, format="csv"
    )
    assert status == "COPY 10"
    lines = sorted(out.getvalue().decode().splitlines(), key=lambda s: int(s.split(",")[0]))
    assert lines == [f"{i},{MASKED}" for i in range(1, 11)]


async def test_asyncpg_copy_from_table_with_options_is_masked(apg: asyncpg.Connection) -> None:
    out = io.BytesIO()
    status = await apg.copy_from_table(
        "people",
        schema_name="compat",
        columns=["id", "name", "ssn"],
        output=out,
        format="csv",
        header=True,
        delimiter="|",
        quote="'",
        force_quote=["ssn"],
        null="\\N",
    )
    assert status == "COPY 10"
    header, *rows = out.getvalue().decode().splitlines()
    assert header == "id|name|ssn"
    assert sorted(rows, key=lambda s: int(s.split("|")[0])) == [
        f"{i}|{name}|'{MASKED}'" for i, name, _ssn, _notes in COMPAT_PEOPLE
    ]


async def test_asyncpg_copy_of_the_whole_table_is_refused(apg: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError) as info:
        await apg.copy_from_table("people", schema_name="compat", output=io.BytesIO())
    assert info.value.sqlstate == "42501"
    assert info.value.args[0] == DENIED
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError) as info:
        await apg.copy_from_table(
            "people", schema_name="compat", output=io.BytesIO(), format="binary"
        )
    assert info.value.args[0] == DENIED
    # The connection goes on.
    assert await apg.fetchval("SELECT ssn FROM compat.people WHERE id = 2") == MASKED
    assert await apg.fetchval("SELECT count(*) FROM compat.people") == 10


async def test_psycopg_copy_naming_a_denied_column_is_refused(
    pconn: psycopg.AsyncConnection[Any],
) -> None:
    for sql in (
        "COPY compat.people (id, notes) TO STDOUT",
        "COPY compat.people TO STDOUT",
        "COPY compat.people TO STDOUT (FORMAT csv)",
        'COPY compat.people ("notes") TO STDOUT WITH CSV HEADER',
    ):
        with pytest.raises(errors.InsufficientPrivilege) as info:
            await _copy_out(pconn, sql)
        assert info.value.sqlstate == "42501"
        assert info.value.diag.message_primary == DENIED, sql
        await _still_masked(pconn)


async def test_psycopg_copy_of_allowed_columns_is_masked(
    pconn: psycopg.AsyncConnection[Any],
) -> None:
    data = await _copy_out(pconn, "COPY compat.people (id, ssn) TO STDOUT (FORMAT csv)")
    assert sorted(data.decode().splitlines(), key=lambda s: int(s.split(",")[0])) == [
        f"{i},{MASKED}" for i in range(1, 11)
    ]
    # The real values never leave the server.
    assert all(ssn.encode() not in data for _i, _n, ssn, _notes in COMPAT_PEOPLE)


# Each form with the same options on the analyst's view of the data, run directly:
# the rewritten COPY must be accepted by PostgreSQL and give the same bytes.
OPTION_FORMS = [
    "(FORMAT binary)",
    "WITH (FORMAT binary)",
    "(FORMAT csv)",
    "(FORMAT 'csv', HEADER true)",
    "WITH (FORMAT csv, HEADER, DELIMITER ';', NULL 'n/a', FORCE_QUOTE (ssn), ENCODING 'UTF8')",
    "(FORMAT csv, FORCE_QUOTE *, QUOTE '''', ESCAPE E'\\\\')",
    "(FORMAT text, DELIMITER E'\\t', NULL '')",
    "WITH CSV HEADER",
    "CSV",
    "BINARY",
    "WITH BINARY",
    "WITH DELIMITER AS '|' NULL AS ''",
    "CSV HEADER QUOTE '\"' ESCAPE '\\' FORCE QUOTE id, ssn",
    "CSV FORCE QUOTE *",
    "DELIMITER E'\\t' ENCODING 'UTF8'",
]


@pytest.mark.parametrize("options", OPTION_FORMS)
async def test_rewritten_copy_forms_run_on_postgres(
    pconn: psycopg.AsyncConnection[Any], pg: PgCluster, options: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as su:
        ordered = await _copy_out(su, f"COPY ({MASKED_PEOPLE} ORDER BY id) TO STDOUT {options}")
        heap = await _copy_out(su, f"COPY ({MASKED_PEOPLE}) TO STDOUT {options}")
    assert ordered and heap  # the comparisons are not between empty outputs
    query = "(SELECT id, name, ssn FROM compat.people ORDER BY id)"
    assert await _copy_out(pconn, f"COPY {query} TO STDOUT {options}") == ordered
    # Both sides scan the table in the same (physical) order.
    table = await _copy_out(pconn, f"COPY compat.people (id, name, ssn) TO STDOUT {options}")
    assert table == heap


@pytest.mark.parametrize(
    ("table_form", "equivalent"),
    [
        ("COPY BINARY compat.people (id, ssn) TO STDOUT", "WITH (FORMAT binary)"),
        ("COPY compat.people (id, ssn) TO STDOUT USING DELIMITERS '|'", "(DELIMITER '|')"),
        (
            "COPY compat.people (id, ssn) TO STDOUT DELIMITERS '|' CSV",
            "(DELIMITER '|', FORMAT csv)",
        ),
    ],
)
async def test_table_only_legacy_forms_run_on_postgres(
    pconn: psycopg.AsyncConnection[Any], pg: PgCluster, table_form: str, equivalent: str
) -> None:
    direct = f"COPY (SELECT id, '****'::text AS ssn FROM compat.people) TO STDOUT {equivalent}"
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as su:
        expected = await _copy_out(su, direct)
    assert expected and await _copy_out(pconn, table_form) == expected


async def test_copy_from_stdin_forms(pconn: psycopg.AsyncConnection[Any]) -> None:
    forms = [  # (statement, field separator, header line)
        ("COPY compat.scratch (id, label) FROM STDIN (FORMAT csv)", ",", ""),
        ("COPY compat.scratch (id, label) FROM STDIN WITH CSV HEADER", ",", "id,label\n"),
        ("COPY compat.scratch FROM STDIN DELIMITER '|'", "|", ""),
        ("COPY compat.scratch FROM STDIN (FORMAT text, NULL 'x', FREEZE false)", "\t", ""),
    ]
    expected: list[tuple[int, str | None]] = []
    for n, (sql, sep, header) in enumerate(forms):
        rows = [(i, f"form {n} row {i}") for i in IDS[10 * n : 10 * n + 2]]
        body = header + "".join(f"{i}{sep}{label}\n" for i, label in rows)
        async with pconn.cursor() as cur:
            async with cur.copy(sql) as copy:
                await copy.write(body.encode())
            assert cur.rowcount == 2, sql
        expected += rows
    assert await _scratch(pconn) == expected


async def test_copy_into_a_governed_table_needs_consent(
    pconn: psycopg.AsyncConnection[Any],
) -> None:
    with pytest.raises(errors.InsufficientPrivilege) as info:
        async with pconn.cursor() as cur, cur.copy("COPY compat.people FROM STDIN (FORMAT csv)"):
            pass
    assert info.value.diag.message_primary == (
        "oversight: blocked by compat-people: COPY on governed table compat.people is not allowed"
    )
    await _still_masked(pconn)


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("COPY compat.scratch FROM STDIN WHERE id > 6000", "a WHERE clause is not supported"),
        ("COPY compat.scratch TO STDOUT WITH OIDS", "unsupported COPY option"),
        ("COPY compat.people (id) TO STDOUT (FORMAT csv) CSV", "unexpected text"),
    ],
)
async def test_copy_forms_outside_the_grammar_are_refused(
    pconn: psycopg.AsyncConnection[Any], sql: str, why: str
) -> None:
    with pytest.raises(errors.InsufficientPrivilege) as info:
        async with pconn.cursor() as cur, cur.copy(sql):
            pass
    message = info.value.diag.message_primary or ""
    assert message.startswith(NOT_UNDERSTOOD + why), message
    assert await _scratch(pconn) == []
    await _still_masked(pconn)
