"""The ledger detectors through the proxy against real PostgreSQL (issue #16).

The proxy runs the production hooks (policy engine and guard, the guard
hashing restricted keys with the ledger key the proxy is given); each
statement's subjects come from its real result rows. The
statement that fires a detector has run and its record says so; with
`action: block` the user's next statement is refused with 42501.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from openrules import OPEN_RULES
from pgcluster import PgCluster

from proxy.catalog import load_catalog
from proxy.enforce import Enforcer
from proxy.guard import Guard, MemoryStore
from proxy.ledger.hashing import subject_hash
from proxy.rules import load_rules

USER, OTHER, PASSWORD = "gl_reader", "gl_other", "gl-secret-1"
KEY = "ledger-key-for-detector-tests"
SUBJECTS = """\
subjects:
  - id: person
    table: public.gl_people
    key: id
    lookups: [name]
"""


@pytest.fixture(scope="module")
def tables(pg: PgCluster) -> Iterator[None]:
    def drop(conn: psycopg.Connection[Any]) -> None:
        conn.execute("DROP TABLE IF EXISTS public.gl_people")
        for role in (USER, OTHER):
            conn.execute(f"DROP ROLE IF EXISTS {role}")

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        drop(conn)
        for role in (USER, OTHER):
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
        conn.execute("CREATE TABLE public.gl_people (id int PRIMARY KEY, name text)")
        conn.execute(
            "INSERT INTO public.gl_people SELECT i, 'p' || i FROM generate_series(1, 200) i"
        )
        conn.execute("ANALYZE public.gl_people")  # reltuples 200: coverage's denominator
        conn.execute(f"GRANT SELECT ON public.gl_people TO {USER}, {OTHER}")
    yield
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        drop(conn)


async def serve(pg: PgCluster, proxy_factory: Any, tmp_path: Path, extraction: str) -> Any:
    path = tmp_path / "rules.yaml"
    path.write_text(OPEN_RULES + SUBJECTS + extraction)
    rules, catalog = load_rules(path), await load_catalog(pg.dsn())
    guard = Guard(rules, MemoryStore(), catalog, ledger_key=KEY.encode())
    return await proxy_factory(hooks=Enforcer(rules, catalog, guard), rules=path, ledger_key=KEY)


async def records(proxy: Any) -> list[dict[str, Any]]:
    await proxy.stop()
    lines = [orjson.loads(line) for line in proxy.audit_log.read_bytes().splitlines()]
    return [r for r in lines if r.get("event") == "statement"]


async def test_coverage_over_statements_blocks_the_next_one(
    pg: PgCluster, tables: None, proxy_factory: Any, tmp_path: Path
) -> None:
    proxy = await serve(
        pg,
        proxy_factory,
        tmp_path,
        """\
extraction:
  - {id: harvest, detect: coverage, subject: person, share: 0.25, window: 7d, action: block}
""",
    )
    async with await psycopg.AsyncConnection.connect(
        proxy.dsn(USER, PASSWORD), autocommit=True
    ) as conn:
        await conn.execute("SELECT id, name FROM gl_people WHERE id <= 30")
        cur = await conn.execute("SELECT id FROM gl_people WHERE id BETWEEN 21 AND 60")
        assert len(await cur.fetchall()) == 40  # it ran: 60 distinct people, over 25% of 200
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            await conn.execute("SELECT 1")
        assert str(e.value).startswith(
            "oversight: blocked by harvest: received about 60 distinct person records within 7d"
        )
    async with await psycopg.AsyncConnection.connect(
        proxy.dsn(OTHER, PASSWORD), autocommit=True
    ) as conn:
        await conn.execute("SELECT id FROM gl_people WHERE id <= 100")  # someone else's count
    first, crossing, refused, other = await records(proxy)
    assert "detectors" not in first and first["subjects"]["person"]["seen_count"] == 30
    assert crossing["decision"] == "allow" and crossing["rows"] == 40
    (hit,) = crossing["detectors"]
    assert hit == {
        "rule": "harvest",
        "detector": "coverage",
        "action": "block",
        "subject": "person",
        "distinct": 60,
        "threshold": 50,
        "share": 0.25,
        "of": 200,
        "window_s": 7 * 86400.0,
        "table": "public.gl_people",
    }
    assert refused["decision"] == "block" and refused["rules"] == ["harvest"]
    assert refused["detectors"][0]["detector"] == "coverage"
    assert other["user"] == OTHER and "detectors" in other  # 100 of 200: bob crossed too
    assert other["detectors"][0]["distinct"] == 100


async def test_restricted_subject_found_by_name_is_reported_once(
    pg: PgCluster, tables: None, proxy_factory: Any, tmp_path: Path
) -> None:
    proxy = await serve(
        pg,
        proxy_factory,
        tmp_path,
        """\
extraction:
  - {id: vip, detect: restricted_lookup, subject: person, keys: [7, 8], action: log}
""",
    )
    async with await psycopg.AsyncConnection.connect(
        proxy.dsn(USER, PASSWORD), autocommit=True
    ) as conn:
        await conn.execute("SELECT id, name FROM gl_people WHERE name = 'p6'")
        await conn.execute("SELECT id, name FROM gl_people WHERE name = 'p7'")
        await conn.execute("SELECT id, name FROM gl_people WHERE name = 'p7'")  # not the first
        await conn.execute("SELECT 1")  # log only: nothing refused
    recs = await records(proxy)
    assert [("detectors" in r) for r in recs] == [False, True, False, False]
    (hit,) = recs[1]["detectors"]
    want = subject_hash(KEY.encode(), "person", "7")
    assert hit["restricted"] == [{"hash": want, "how": "seen"}]


async def test_restricted_lookup_block_refuses_the_users_later_statements(
    pg: PgCluster, tables: None, proxy_factory: Any, tmp_path: Path
) -> None:
    proxy = await serve(
        pg,
        proxy_factory,
        tmp_path,
        """\
extraction:
  - id: vip
    match: {users: [gl_reader]}
    detect: restricted_lookup
    subject: person
    keys: [8]
    window: 1h
    action: block
""",
    )
    async with await psycopg.AsyncConnection.connect(
        proxy.dsn(USER, PASSWORD), autocommit=True
    ) as conn:
        cur = await conn.execute("SELECT id, name FROM gl_people WHERE id BETWEEN 5 AND 9")
        assert len(await cur.fetchall()) == 5  # the statement itself ran
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="blocked by vip"):
            await conn.execute("SELECT 1")
    # A new session of the same user is refused too; another user is not.
    async with await psycopg.AsyncConnection.connect(
        proxy.dsn(USER, PASSWORD), autocommit=True
    ) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="restricted person"):
            await conn.execute("SELECT 1")
    async with await psycopg.AsyncConnection.connect(
        proxy.dsn(OTHER, PASSWORD), autocommit=True
    ) as conn:
        await conn.execute("SELECT id FROM gl_people WHERE id = 8")
    recs = await records(proxy)
    assert [r["decision"] for r in recs] == ["allow", "block", "block", "allow"]
    assert recs[0]["detectors"][0]["detector"] == "restricted_lookup"
