"""Every run that returns rows is admitted by the guard, whatever made it (real PostgreSQL).

A statement PREPAREd in SQL and run by a protocol Bind/Execute, a cursor
DECLAREd in SQL and run by a protocol Execute of its portal, DECLARE + FETCH
and EXECUTE in a simple Query are all capped at exactly N rows (54000 after
N) and counted in window budgets, like a protocol Parse/Bind/Execute. A
Bind, Execute or Describe naming what the proxy never saw made is refused
(26000 / 34000). After a rules reload, SQL-prepared statements and open
cursors are decided again at their next run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgcluster import PgCluster
from rawclient import SYNC, Raw, bind, describe, errors_in

from proxy import messages as m
from proxy.catalog import load_catalog
from proxy.enforce import Enforcer
from proxy.guard import Guard, MemoryStore
from proxy.rules import load_rules

USER, PASSWORD = "scramuser", "scram-secret-1"
CAP = 5

RULES = """\
version: 1
defaults: {{statements: [all], unparsed: block}}
users:
  scramuser: {{groups: [analysts]}}
rules:
  - id: people-mask
    match: {{groups: [analysts]}}
    table: public.every_run
    columns: {{ssn: {ssn}}}
functions:
  - id: cursor-maker
    match: {{groups: [analysts]}}
    allow: [public.every_run_cursor]
extraction:
  - id: cap
    match: {{groups: [analysts]}}
    max_rows_per_query: {cap}
  - id: hourly
    match: {{groups: [analysts]}}
    window: 1h
    max_rows: {budget}
    action: block
"""


def write_rules(path: Path, *, ssn: str = "redact", cap: int = CAP, budget: int = 10_000) -> None:
    path.write_text(RULES.format(ssn=ssn, cap=cap, budget=budget))


@pytest.fixture(scope="module")
def table(pg: PgCluster) -> Iterator[None]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS every_run")
        conn.execute("CREATE TABLE every_run (id int PRIMARY KEY, name text, ssn text)")
        conn.execute(
            "INSERT INTO every_run SELECT g, 'p' || g, 'ssn-' || g FROM generate_series(1, 1000) g"
        )
        conn.execute("GRANT SELECT ON every_run TO scramuser")
        conn.execute(
            "CREATE OR REPLACE FUNCTION every_run_cursor() RETURNS refcursor LANGUAGE plpgsql"
            " AS $$ DECLARE c refcursor := 'made_inside'; BEGIN"
            " OPEN c FOR SELECT id FROM every_run; RETURN c; END $$"
        )
    yield
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP FUNCTION IF EXISTS every_run_cursor()")
        conn.execute("DROP TABLE IF EXISTS every_run")


class Setup:
    def __init__(self, proxy: Any, enforcer: Enforcer, rules: Path, pg: PgCluster) -> None:
        self.proxy, self.enforcer, self.rules, self.pg = proxy, enforcer, rules, pg

    async def client(self) -> Raw:
        c = await Raw.open(self.proxy.port)
        await c.login(USER, PASSWORD, self.pg.dbname)
        return c

    async def reload(self, **kw: Any) -> None:
        write_rules(self.rules, **kw)
        self.enforcer.reload(load_rules(self.rules))


@pytest.fixture
async def setup(
    pg: PgCluster, table: None, proxy_factory: Any, tmp_path: Path
) -> AsyncIterator[Setup]:
    path = tmp_path / "every-run.yaml"
    write_rules(path)
    rules = load_rules(path)
    catalog = await load_catalog(pg.dsn())
    enforcer = Enforcer(rules, catalog, Guard(rules, MemoryStore(), catalog))
    yield Setup(await proxy_factory(hooks=enforcer), enforcer, path, pg)


def rows(frames: list[tuple[bytes, bytes]]) -> int:
    return sum(1 for t, _ in frames if t == b"D")


def codes(frames: list[tuple[bytes, bytes]]) -> list[str]:
    return [e["C"] for e in errors_in(frames)]


def values(frames: list[tuple[bytes, bytes]]) -> list[str]:
    """The last column of each DataRow, as text."""
    out = []
    for t, body in frames:
        if t == b"D":
            r = m.Reader(body)
            n = r.i16()
            value = ""
            for _ in range(n):
                size = r.i32()
                value = r.take(size).decode() if size >= 0 else ""
            out.append(value)
    return out


async def extended(c: Raw, *messages: bytes) -> list[tuple[bytes, bytes]]:
    c.send(b"".join(messages) + SYNC)
    return await c.until(b"Z")


async def test_sql_prepare_then_protocol_bind_execute_is_capped(setup: Setup) -> None:
    c = await setup.client()
    assert codes(await c.query("PREPARE s AS SELECT id, ssn FROM every_run")) == []
    frames = await extended(c, bind("", "s"), m.execute(""))
    assert rows(frames) == CAP and codes(frames) == ["54000"]
    assert all(v == "REDACTED" or "ssn-" not in v for v in values(frames))
    # The session goes on, and the statement is still there for another run.
    frames = await extended(c, bind("p", "s"), m.execute("p", 2), m.execute("p", 10))
    assert rows(frames) == CAP and codes(frames) == ["54000"]
    c.close()


async def test_sql_declare_then_protocol_execute_of_its_portal_is_capped(setup: Setup) -> None:
    c = await setup.client()
    assert codes(await c.query("BEGIN")) == []
    assert codes(await c.query("DECLARE cur CURSOR FOR SELECT id FROM every_run")) == []
    frames = await extended(c, m.execute("cur", 3), m.execute("cur", 100))
    assert rows(frames) == CAP and codes(frames) == ["54000"]
    c.close()


async def test_declare_and_fetch_are_capped_across_fetches(setup: Setup) -> None:
    c = await setup.client()
    assert codes(await c.query("BEGIN; DECLARE cur CURSOR FOR SELECT id FROM every_run")) == []
    first = await c.query("FETCH 3 FROM cur")
    assert rows(first) == 3 and codes(first) == []
    second = await c.query("FETCH 10 FROM cur")
    assert rows(second) == CAP - 3 and codes(second) == ["54000"]
    c.close()


async def test_declare_and_fetch_in_one_string_are_capped(setup: Setup) -> None:
    c = await setup.client()
    frames = await c.query("BEGIN; DECLARE cur CURSOR FOR SELECT id FROM every_run; FETCH ALL cur")
    assert rows(frames) == CAP and codes(frames) == ["54000"]
    c.close()


async def test_execute_in_a_query_is_capped(setup: Setup) -> None:
    c = await setup.client()
    frames = await c.query("PREPARE s(int) AS SELECT id FROM every_run WHERE id > $1")
    assert codes(frames) == []
    frames = await c.query("EXECUTE s(10)")
    assert rows(frames) == CAP and codes(frames) == ["54000"]
    frames = await c.query("PREPARE t AS SELECT 1 AS one; EXECUTE t")
    assert rows(frames) == 1 and codes(frames) == []
    c.close()


async def test_protocol_bind_of_a_statement_prepared_by_protocol_execute(setup: Setup) -> None:
    """PREPARE sent through Parse/Bind/Execute makes a name just the same."""
    c = await setup.client()
    frames = await extended(
        c, m.parse("", "PREPARE s AS SELECT id FROM every_run"), bind(), m.execute("")
    )
    assert codes(frames) == []
    frames = await extended(c, bind("", "s"), m.execute(""))
    assert rows(frames) == CAP and codes(frames) == ["54000"]
    c.close()


async def test_every_kind_of_run_counts_in_the_window_budget(setup: Setup) -> None:
    await setup.reload(cap=1000, budget=12)
    c = await setup.client()
    await c.query("PREPARE s AS SELECT id FROM every_run LIMIT 4")
    assert rows(await c.query("EXECUTE s")) == 4
    assert rows(await extended(c, bind("", "s"), m.execute(""))) == 4
    await c.query("BEGIN; DECLARE cur CURSOR FOR SELECT id FROM every_run")
    frames = await c.query("FETCH 10 FROM cur")  # 4 of the budget's 12 rows are left
    assert rows(frames) == 4 and codes(frames) == ["54000"]
    await c.query("ROLLBACK")
    frames = await c.query("EXECUTE s")
    assert rows(frames) == 0 and codes(frames) == ["53400"]
    c.close()


async def test_unknown_statement_and_portal_are_refused(setup: Setup) -> None:
    c = await setup.client()
    frames = await extended(c, bind("", "nobody"), m.execute(""))
    errs = errors_in(frames)
    assert [e["C"] for e in errs] == ["26000"]
    assert errs[0]["M"] == 'oversight: prepared statement "nobody" is unknown to the proxy'
    assert codes(await extended(c, m.execute("nowhere"))) == ["34000"]
    assert codes(await extended(c, describe(b"S", "nobody"))) == ["26000"]
    assert codes(await extended(c, describe(b"P", "nowhere"))) == ["34000"]
    assert codes(await c.query("EXECUTE nobody")) == ["26000"]
    assert codes(await c.query("BEGIN")) == []
    errs = errors_in(await c.query("FETCH 1 FROM nowhere"))
    assert [e["C"] for e in errs] == ["34000"] and "unknown to the proxy" in errs[0]["M"]
    assert codes(await c.query("ROLLBACK")) == []
    assert rows(await c.query("SELECT 1")) == 1  # the session goes on
    c.close()


async def test_a_cursor_opened_by_a_function_is_unknown(setup: Setup) -> None:
    """A cursor opened by server-side code was never DECLAREd where the proxy could see it."""
    c = await setup.client()
    frames = await c.query("BEGIN; SELECT every_run_cursor()")
    assert values(frames) == ["made_inside"] and codes(frames) == []
    frames = await c.query("FETCH ALL FROM made_inside")
    errs = errors_in(frames)
    assert rows(frames) == 0 and [e["C"] for e in errs] == ["34000"]
    assert "unknown to the proxy" in errs[0]["M"]
    await c.query("ROLLBACK; BEGIN; SELECT every_run_cursor()")
    frames = await extended(c, m.execute("made_inside"))
    assert rows(frames) == 0 and codes(frames) == ["34000"]
    c.close()


async def test_closed_and_ended_cursors_are_forgotten(setup: Setup) -> None:
    c = await setup.client()
    await c.query("BEGIN; DECLARE a CURSOR FOR SELECT 1; DECLARE b CURSOR WITH HOLD FOR SELECT 2")
    await c.query("CLOSE a")
    assert codes(await c.query("FETCH 1 FROM a")) == ["34000"]  # refused by the proxy
    await c.query("ROLLBACK")
    await c.query("BEGIN; DECLARE h CURSOR WITH HOLD FOR SELECT 3 AS x; COMMIT")
    assert values(await c.query("FETCH 1 FROM h")) == ["3"]  # WITH HOLD outlives COMMIT
    await c.query("CLOSE ALL")
    errs = errors_in(await c.query("FETCH 1 FROM h"))
    assert [e["C"] for e in errs] == ["34000"] and "unknown to the proxy" in errs[0]["M"]
    await c.query("PREPARE gone AS SELECT 1; DEALLOCATE gone")
    assert codes(await extended(c, bind("", "gone"), m.execute(""))) == ["26000"]
    c.close()


async def test_reload_that_changes_the_rewrite_makes_sql_prepared_statements_stale(
    setup: Setup,
) -> None:
    c = await setup.client()
    await c.query("PREPARE s AS SELECT ssn FROM every_run WHERE id = 1")
    await setup.reload(ssn="hash")
    errs = errors_in(await c.query("EXECUTE s"))
    assert [e["C"] for e in errs] == ["0A000"]
    assert errs[0]["M"] == "cached plan must not change result type"
    assert codes(await extended(c, bind("", "s"), m.execute(""))) == ["0A000"]
    await c.query("DEALLOCATE s")
    await c.query("PREPARE s AS SELECT ssn FROM every_run WHERE id = 1")
    frames = await c.query("EXECUTE s")  # prepared again under the new rules
    assert codes(frames) == [] and values(frames) != ["ssn-1"] and rows(frames) == 1
    c.close()


async def test_reload_that_refuses_reaches_open_cursors_and_statements(setup: Setup) -> None:
    c = await setup.client()
    await c.query("PREPARE s AS SELECT ssn FROM every_run WHERE id = 1")
    await c.query("BEGIN; DECLARE h CURSOR WITH HOLD FOR SELECT ssn FROM every_run; COMMIT")
    assert rows(await c.query("FETCH 1 FROM h")) == 1
    await setup.reload(ssn="deny")
    assert codes(await c.query("EXECUTE s")) == ["42501"]
    # Copying its rows into a table runs it as well: not under the old rules.
    assert codes(await c.query("CREATE TEMP TABLE copied AS EXECUTE s")) == ["42501"]
    assert codes(await c.query("FETCH 1 FROM h")) == ["42501"]
    assert codes(await extended(c, m.execute("h", 1))) == ["42501"]
    c.close()


async def test_reload_that_changes_a_cursor_rewrite_says_declare_it_again(setup: Setup) -> None:
    c = await setup.client()
    await c.query("BEGIN; DECLARE h CURSOR FOR SELECT ssn FROM every_run")
    await setup.reload(ssn="hash")
    errs = errors_in(await c.query("FETCH 1 FROM h"))
    assert [e["C"] for e in errs] == ["0A000"]
    assert errs[0]["M"] == 'oversight: the rules changed since cursor "h" was declared'
    c.close()


async def test_reload_that_changes_nothing_lets_runs_go_on(setup: Setup) -> None:
    c = await setup.client()
    await c.query("PREPARE s AS SELECT id FROM every_run WHERE id < 3")
    await c.query("BEGIN; DECLARE cur CURSOR FOR SELECT id FROM every_run")
    assert rows(await c.query("FETCH 3 FROM cur")) == 3
    await setup.reload(ssn="redact")
    assert rows(await c.query("EXECUTE s")) == 2
    frames = await c.query("FETCH 10 FROM cur")  # the cap still counts the first 3
    assert rows(frames) == CAP - 3 and codes(frames) == ["54000"]
    c.close()


async def test_psycopg_named_cursor_is_capped_across_fetches(setup: Setup) -> None:
    """psycopg's server-side cursors DECLARE and FETCH through the extended protocol."""
    dsn = setup.proxy.dsn(USER, PASSWORD)
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.cursor("named") as cur:
        await cur.execute("SELECT id FROM every_run ORDER BY id")
        assert [r[0] for r in await cur.fetchmany(3)] == [1, 2, 3]
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="cap"):
            await cur.fetchmany(10)


async def test_unknown_names_pass_to_postgresql_for_users_without_a_policy(setup: Setup) -> None:
    c = await Raw.open(setup.proxy.port)
    await c.login(setup.pg.user, setup.pg.password, setup.pg.dbname)
    errs = errors_in(await extended(c, bind("", "nobody"), m.execute("")))
    assert [e["C"] for e in errs] == ["26000"] and "oversight" not in errs[0]["M"]
    c.close()
