"""The ledger's `seen` through the proxy against real PostgreSQL (issue #16).

A statement's audit record must name, as keyed hashes, exactly the people
whose key reached the client: read from the key column or the `via` column
wherever the result carries it, in text or binary, by simple Query, by a
prepared statement run again without Describe (asyncpg), and page by page
from a cursor; not when the key is masked or not selected; never in
plaintext.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psycopg
import pytest
from openrules import OPEN_RULES
from pgcluster import PgCluster
from rawclient import SYNC, Raw, bind

from proxy import messages as m
from proxy.catalog import load_catalog
from proxy.enforce import Enforcer
from proxy.ledger.hashing import subject_hash
from proxy.rules import load_rules

USER, MASKED, PASSWORD = "led_reader", "led_masked", "led-secret-1"
KEY = "ledger-key-for-tests"
RULES = (
    OPEN_RULES
    + f"""\
users:
  {MASKED}: {{groups: [masked]}}
rules:
  - id: people-hashed-key
    match: {{groups: [masked]}}
    table: public.led_people
    columns: {{id: hash}}
subjects:
  - id: person
    table: public.led_people
    key: id
    lookups: [name]
    via: [{{table: public.led_cases, column: person_id}}]
"""
)
HEX32 = re.compile(r"[0-9a-f]{32}")


def h(value: str) -> str:
    return subject_hash(KEY.encode(), "person", value)


@pytest.fixture(scope="module")
def tables(pg: PgCluster) -> Iterator[None]:
    def drop(conn: psycopg.Connection[Any]) -> None:
        conn.execute("DROP TABLE IF EXISTS public.led_people, public.led_cases CASCADE")
        for role in (USER, MASKED):
            conn.execute(f"DROP ROLE IF EXISTS {role}")

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        drop(conn)
        for role in (USER, MASKED):
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
        # A dropped column first: attnums are not column positions.
        conn.execute("CREATE TABLE public.led_people (gone int, id int PRIMARY KEY, name text)")
        conn.execute("ALTER TABLE public.led_people DROP COLUMN gone")
        conn.execute(
            "INSERT INTO public.led_people SELECT i, 'p' || i FROM generate_series(1, 400) i"
        )
        conn.execute("CREATE TABLE public.led_cases (id int, person_id int)")
        conn.execute("INSERT INTO public.led_cases VALUES (1, 42), (2, 42), (3, 7), (4, NULL)")
        conn.execute("CREATE VIEW led_v AS SELECT id AS who, name FROM public.led_people")
        conn.execute("CREATE VIEW led_vv AS SELECT who FROM led_v WHERE who < 100")
        conn.execute("CREATE VIEW led_calc AS SELECT id + 1 AS n FROM public.led_people")
        conn.execute(
            f"GRANT SELECT ON public.led_people, public.led_cases, led_v, led_vv, led_calc "
            f"TO {USER}, {MASKED}"
        )
    yield
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        drop(conn)


@pytest.fixture
async def proxy(
    pg: PgCluster, tables: None, proxy_factory: Any, tmp_path: Path
) -> AsyncIterator[Any]:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    hooks = Enforcer(load_rules(rules_file), await load_catalog(pg.dsn()), None)
    yield await proxy_factory(hooks=hooks, rules=rules_file, ledger_key=KEY)


async def records(proxy: Any) -> list[dict[str, Any]]:
    """The statement records, once the proxy has stopped (and so written them all)."""
    await proxy.stop()
    lines = [orjson.loads(line) for line in proxy.audit_log.read_bytes().splitlines()]
    return [r for r in lines if r.get("event") == "statement"]


def seen(record: dict[str, Any]) -> dict[str, Any] | None:
    person: dict[str, Any] | None = record.get("subjects", {}).get("person")
    if person is None or not person["seen_count"]:
        return None
    assert all(HEX32.fullmatch(x) for x in person["seen"])
    return person


def by_sql(recs: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [r for r in recs if text in r["sql"]]


async def test_a_select_of_300_people_names_each_once_and_never_in_plaintext(proxy: Any) -> None:
    async with await psycopg.AsyncConnection.connect(
        proxy.dsn(USER, PASSWORD), autocommit=True, cursor_factory=psycopg.AsyncClientCursor
    ) as conn:
        cur = await conn.execute("SELECT name, id FROM led_people WHERE id <= 300")
        assert len(await cur.fetchall()) == 300
    (rec,) = by_sql(await records(proxy), "FROM led_people")
    person = seen(rec)
    assert person is not None and person["seen_count"] == 300
    assert h("42") in person["seen"] and h("301") not in person["seen"]
    assert len(set(person["seen"])) == 300
    text = orjson.dumps(rec["subjects"]).decode()
    assert '"42"' not in text and "p42" not in text


@pytest.mark.parametrize("binary", [False, True])
async def test_a_prepared_statement_run_three_times_is_read_each_time(
    proxy: Any, binary: bool
) -> None:
    async with await psycopg.AsyncConnection.connect(
        proxy.dsn(USER, PASSWORD), autocommit=True
    ) as conn:
        for _ in range(3):
            cur = conn.cursor(binary=binary)
            await cur.execute(
                "SELECT id, name FROM led_people WHERE id <= %s", (300,), prepare=True
            )
            assert len(await cur.fetchall()) == 300
    recs = by_sql(await records(proxy), "FROM led_people")
    assert len(recs) == 3
    for rec in recs:
        person = seen(rec)
        assert person is not None and person["seen_count"] == 300 and h("42") in person["seen"]


async def test_asyncpg_runs_its_prepared_statement_without_describe(proxy: Any) -> None:
    conn = await asyncpg.connect(**proxy.params(USER, PASSWORD))
    try:
        for limit in (10, 50, 50):  # the statement cache: Bind and Execute alone after the first
            rows = await conn.fetch("SELECT id FROM led_people WHERE id <= $1", limit)
            assert len(rows) == limit
    finally:
        await conn.close()
    recs = [r for r in by_sql(await records(proxy), "FROM led_people") if r["rows"]]
    assert [seen(r)["seen_count"] for r in recs] == [10, 50, 50]  # type: ignore[index]
    assert all(h("7") in seen(r)["seen"] for r in recs)  # type: ignore[index]


async def test_a_join_through_the_via_column_counts(proxy: Any) -> None:
    async with await psycopg.AsyncConnection.connect(
        proxy.dsn(USER, PASSWORD), autocommit=True
    ) as conn:
        await conn.execute("SELECT c.id, c.person_id FROM led_cases c ORDER BY c.id")
    (rec,) = by_sql(await records(proxy), "FROM led_cases")
    person = seen(rec)
    assert person is not None
    assert sorted(person["seen"]) == sorted([h("42"), h("7")]) and person["seen_count"] == 2


async def test_a_masked_or_unselected_key_is_not_seen(proxy: Any) -> None:
    async with await psycopg.AsyncConnection.connect(
        proxy.dsn(MASKED, PASSWORD), autocommit=True
    ) as conn:
        cur = await conn.execute("SELECT id, name FROM led_people WHERE name = 'p42'")
        ((hashed, _),) = await cur.fetchall()
        assert hashed != "42"  # the mask applied
    async with await psycopg.AsyncConnection.connect(
        proxy.dsn(USER, PASSWORD), autocommit=True
    ) as conn:
        await conn.execute("SELECT name FROM led_people WHERE id = 42")
        await conn.execute("SELECT id + 0 AS n FROM led_people WHERE id = 42")
    recs = by_sql(await records(proxy), "FROM led_people")
    assert len(recs) == 3 and [seen(r) for r in recs] == [None, None, None]


async def test_a_cursor_fetch_loop_counts_each_page(proxy: Any) -> None:
    async with await psycopg.AsyncConnection.connect(
        proxy.dsn(USER, PASSWORD), cursor_factory=psycopg.AsyncClientCursor
    ) as conn:
        await conn.execute("DECLARE c CURSOR FOR SELECT id FROM led_people ORDER BY id")
        got = 0
        while True:
            cur = await conn.execute("FETCH 150 FROM c")
            n = len(await cur.fetchall())
            got += n
            if n == 0:
                break
        await conn.commit()
    assert got == 400
    fetches = [r for r in await records(proxy) if r["sql"].startswith("FETCH")]
    counts = [(seen(r) or {"seen_count": 0})["seen_count"] for r in fetches]
    assert counts == [150, 150, 100, 0]
    assert h("42") in seen(fetches[0])["seen"]  # type: ignore[index]
    assert h("400") in seen(fetches[2])["seen"]  # type: ignore[index]


@pytest.mark.parametrize(
    "sql",
    [
        "COPY led_people TO STDOUT",
        "COPY public.led_people (name, id) TO STDOUT WITH (FORMAT csv, HEADER)",
        "COPY led_people TO STDOUT (FORMAT binary)",
    ],
)
async def test_copy_to_stdout_of_the_subject_table_counts(proxy: Any, sql: str) -> None:
    async with await psycopg.AsyncConnection.connect(
        proxy.dsn(USER, PASSWORD), autocommit=True
    ) as conn:
        cur = conn.cursor()
        async with cur.copy(sql) as copy:
            got = b"".join([bytes(chunk) async for chunk in copy])
    assert got
    (rec,) = [r for r in await records(proxy) if r["sql"].startswith("COPY")]
    person = seen(rec)
    assert person is not None and person["seen_count"] == 400 and h("42") in person["seen"]


async def test_a_view_passing_the_key_through_counts(proxy: Any) -> None:
    async with await psycopg.AsyncConnection.connect(
        proxy.dsn(USER, PASSWORD), autocommit=True
    ) as conn:
        await conn.execute("SELECT who FROM led_v WHERE who <= 50")
        await conn.execute("SELECT who FROM led_vv")
        await conn.execute("SELECT n FROM led_calc WHERE n <= 50")
    recs = await records(proxy)
    v, vv, calc = (by_sql(recs, f"FROM {name}")[0] for name in ("led_v", "led_vv", "led_calc"))
    assert (seen(v) or {})["seen_count"] == 50 and h("42") in (seen(v) or {})["seen"]
    assert (seen(vv) or {})["seen_count"] == 99
    assert seen(calc) is None  # computed: not the key


async def test_a_run_the_client_never_described_is_read_and_the_client_sees_no_extra_reply(
    proxy: Any, pg: PgCluster
) -> None:
    raw = await Raw.open(proxy.port)
    try:
        await raw.login(USER, PASSWORD, pg.dbname)
        sql = "SELECT id FROM led_people WHERE id <= 20"
        raw.send(m.parse("", sql) + bind() + m.execute("") + SYNC)
        kinds = [t for t, _ in await raw.until(b"Z")]
    finally:
        raw.close()
    assert kinds == [b"1", b"2", *[b"D"] * 20, b"C", b"Z"]  # no RowDescription: not asked for
    (rec,) = by_sql(await records(proxy), "FROM led_people")
    assert (seen(rec) or {})["seen_count"] == 20
