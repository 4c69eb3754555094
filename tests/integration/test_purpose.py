"""The stated purpose through the proxy against real PostgreSQL (DESIGN.md, Purpose; #17).

The server keeps its own copy of `oversight.purpose` (a placeholder setting):
after every step, `SHOW`'s answer through the proxy must equal the purpose the
proxy wrote in that statement's audit record, across SET, SET LOCAL, rolled-back
blocks, savepoints, failing implicit transactions and startup options.
`public.cases` is governed; `defaults.require_purpose` applies to analysts
only, so `pur_admin` reads it without one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from pgcluster import PgCluster

from proxy.catalog import load_catalog
from proxy.enforce import Enforcer
from proxy.rules import load_rules

ANALYST, ADMIN, PASSWORD = "pur_analyst", "pur_admin", "pur-secret-1"
RULES = f"""\
version: 1
defaults:
  require_purpose: {{match: {{groups: [analysts]}}, pattern: "^CASE-[0-9]+ .{{5,}}"}}
users:
  {ANALYST}: {{groups: [analysts]}}
rules:
  - id: cases-case
    match: {{groups: [analysts], purposes: ["CASE-7*"]}}
    table: public.cases
    columns: {{secret: redact}}
  - id: cases-other
    table: public.cases
    columns: {{secret: "null"}}
"""
GOOD = "CASE-42 fraud review"
SEVEN = "CASE-77 audit of payments"


@pytest.fixture(scope="module")
def cases(pg: PgCluster) -> Iterator[None]:
    def drop(conn: psycopg.Connection[Any]) -> None:
        conn.execute("DROP TABLE IF EXISTS public.cases")
        for role in (ANALYST, ADMIN):
            conn.execute(f"DROP ROLE IF EXISTS {role}")

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        drop(conn)
        for role in (ANALYST, ADMIN):
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
        conn.execute("CREATE TABLE public.cases (id int, secret text)")
        conn.execute("INSERT INTO public.cases VALUES (1, 'abcdef')")
        conn.execute(f"GRANT SELECT ON public.cases TO {ANALYST}, {ADMIN}")
    yield
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        drop(conn)


@pytest.fixture
async def proxy(
    pg: PgCluster, cases: None, proxy_factory: Any, tmp_path: Path
) -> AsyncIterator[Any]:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    hooks = Enforcer(load_rules(rules_file), await load_catalog(pg.dsn()), None)
    yield await proxy_factory(hooks=hooks, rules=rules_file)


async def connect(proxy: Any, user: str = ANALYST, **kw: Any) -> psycopg.AsyncConnection[Any]:
    # ClientCursor: statements go as simple Query messages, several to a string.
    return await psycopg.AsyncConnection.connect(
        proxy.dsn(user, PASSWORD), autocommit=True, cursor_factory=psycopg.AsyncClientCursor, **kw
    )


async def show(conn: psycopg.AsyncConnection[Any]) -> str | None:
    """The server's value; '' (as PostgreSQL says for a placeholder RESET) means none."""
    cur = await conn.execute("SELECT current_setting('oversight.purpose', true)")
    row = await cur.fetchone()
    assert row is not None
    return row[0] or None


async def records(proxy: Any) -> list[dict[str, Any]]:
    """Every record, once the proxy has stopped (and so written every session's end)."""
    await proxy.stop()
    return [orjson.loads(line) for line in proxy.audit_log.read_bytes().splitlines()]


async def test_set_local_rollback_and_savepoints_follow_the_server(proxy: Any) -> None:
    conn = await connect(proxy)
    seen: list[str | None] = [await show(conn)]
    await conn.execute(f"SET oversight.purpose = '{GOOD}'")
    seen.append(await show(conn))
    await conn.execute("BEGIN")
    await conn.execute("SET oversight.purpose = 'CASE-1 rolled back soon'")
    seen.append(await show(conn))
    await conn.execute("ROLLBACK")
    seen.append(await show(conn))  # the SET in the rolled-back block reverted
    await conn.execute("BEGIN")
    await conn.execute("SET LOCAL oversight.purpose = 'CASE-2 only in this block'")
    seen.append(await show(conn))
    await conn.execute("COMMIT")
    seen.append(await show(conn))  # SET LOCAL ended with its transaction
    await conn.execute("BEGIN")
    await conn.execute("SAVEPOINT a")
    await conn.execute("SET oversight.purpose = 'CASE-3 after savepoint'")
    await conn.execute("ROLLBACK TO SAVEPOINT a")
    seen.append(await show(conn))
    await conn.execute("COMMIT")
    with pytest.raises(psycopg.errors.DivisionByZero):
        # One implicit transaction: the error undoes the SET before it.
        await conn.execute("SET oversight.purpose = 'CASE-4 undone by error'; SELECT 1/0")
    seen.append(await show(conn))
    await conn.execute("SELECT set_config('oversight.purpose', 'CASE-5 via set_config', false)")
    seen.append(await show(conn))
    await conn.execute("RESET oversight.purpose")
    seen.append(await show(conn))
    await conn.close()
    assert seen == [
        None,
        GOOD,
        "CASE-1 rolled back soon",
        GOOD,  # the SET in the rolled-back block reverted
        "CASE-2 only in this block",
        GOOD,  # SET LOCAL ended with its transaction
        GOOD,
        GOOD,
        "CASE-5 via set_config",
        None,
    ]
    recs = await records(proxy)
    probes = [
        r["purpose"]
        for r in recs
        if r["event"] == "statement" and r["sql"].startswith("SELECT current_setting(")
    ]
    assert probes == seen  # the proxy's record matches the server, statement by statement
    assert all("purpose" in r for r in recs)


async def test_startup_option_sets_the_purpose(proxy: Any) -> None:
    conn = await connect(proxy, options=r"-c oversight.purpose=CASE-9\ from\ PGOPTIONS")
    assert await show(conn) == "CASE-9 from PGOPTIONS"
    cur = await conn.execute("SELECT id FROM public.cases")
    assert await cur.fetchall() == [(1,)]
    await conn.close()
    recs = await records(proxy)
    assert {r["event"]: r["purpose"] for r in recs if r["event"] in ("connect", "disconnect")} == {
        "connect": "CASE-9 from PGOPTIONS",
        "disconnect": "CASE-9 from PGOPTIONS",
    }
    assert all(r["purpose"] == "CASE-9 from PGOPTIONS" for r in recs)


async def test_required_purpose_refuses_analysts_only(proxy: Any) -> None:
    conn = await connect(proxy)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        await conn.execute("SELECT id FROM public.cases")
    assert e.value.diag.message_primary == "oversight: a purpose is required"
    assert "SET oversight.purpose = " in (e.value.diag.message_hint or "")
    await conn.execute("SET oversight.purpose = 'CASE-1 tiny'")  # too short for the pattern
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        await conn.execute("SELECT id FROM public.cases")
    await conn.execute(f"SET oversight.purpose = '{GOOD}'")
    cur = await conn.execute("SELECT id, secret FROM public.cases")
    assert await cur.fetchall() == [(1, None)]  # cases-other: the purpose is not CASE-7*
    await conn.execute(f"SET oversight.purpose = '{SEVEN}'")
    cur = await conn.execute("SELECT id, secret FROM public.cases")
    rows = await cur.fetchall()
    assert rows[0][0] == 1 and rows[0][1] not in (None, "abcdef")  # cases-case: redacted
    await conn.close()

    admin = await connect(proxy, user=ADMIN)
    cur = await admin.execute("SELECT id FROM public.cases")  # not an analyst: no purpose needed
    assert await cur.fetchall() == [(1,)]
    await admin.close()
    recs = await records(proxy)
    refused = [r for r in recs if r["event"] == "statement" and r["decision"] == "block"]
    assert [r["rules"][0] for r in refused] == ["defaults.require_purpose"] * 2
    assert [r["purpose"] for r in refused] == [None, "CASE-1 tiny"]


async def test_purpose_set_in_the_same_string_counts(proxy: Any) -> None:
    conn = await connect(proxy)
    # Rules here match on purposes, chosen once per string: the SET must come on its own.
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        await conn.execute(f"SET oversight.purpose = '{GOOD}'; SELECT id FROM public.cases")
    assert "on its own" in (e.value.diag.message_hint or "")
    assert await show(conn) is None  # refused before the upstream: the SET did not run
    await conn.close()


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("CASE-1 " + "x" * 200, "at most 200 characters"),
        ("CASE-1 two\nlines", "one line"),
    ],
)
async def test_bad_purpose_is_refused_before_the_server(proxy: Any, value: str, why: str) -> None:
    conn = await connect(proxy)
    await conn.execute(f"SET oversight.purpose = '{GOOD}'")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        await conn.execute("SET oversight.purpose = %s", (value,))
    assert why in e.value.diag.message_primary
    assert await show(conn) == GOOD  # the server never saw it
    await conn.close()


async def test_bad_startup_purpose_refuses_the_session(proxy: Any) -> None:
    long = "x" * 201
    with pytest.raises(psycopg.OperationalError, match="at most 200 characters"):
        await connect(proxy, options=f"-c oversight.purpose={long}")


async def test_a_statement_sent_behind_a_purpose_change_is_refused(proxy: Any) -> None:
    """Pipelined: the SELECT is decided while the SET before it is still in flight."""
    conn = await psycopg.AsyncConnection.connect(proxy.dsn(ANALYST, PASSWORD), autocommit=True)
    await conn.execute(f"SET oversight.purpose = '{GOOD}'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        async with conn.pipeline():
            await conn.execute("SET oversight.purpose = ''")
            await conn.execute("SELECT id FROM public.cases")
    await conn.close()


async def test_a_prepared_statement_is_checked_again_when_it_runs(proxy: Any) -> None:
    conn = await psycopg.AsyncConnection.connect(proxy.dsn(ANALYST, PASSWORD), autocommit=True)
    await conn.execute(f"SET oversight.purpose = '{GOOD}'")
    sql = "SELECT id FROM public.cases WHERE id = %s"
    for _ in range(2):
        cur = await conn.execute(sql, (1,), prepare=True)  # Parse once, then Bind/Execute
        assert await cur.fetchall() == [(1,)]
    await conn.execute("RESET oversight.purpose")
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        await conn.execute(sql, (1,), prepare=True)
    assert e.value.diag.message_primary == "oversight: a purpose is required"
    await conn.close()
