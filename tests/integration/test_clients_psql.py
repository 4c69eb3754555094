"""psql through the proxy behaves exactly as psql direct (issue 2, "Done when").

Each test runs the same psql invocation against PostgreSQL and against the
proxy and compares stdout, stderr and exit status, plus exact expected
values so that two equally broken runs cannot pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgcluster import PgCluster

TABLE = "psql_items"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def psql_binary(pg: PgCluster) -> str:
    found = shutil.which("psql")
    if found:
        return found
    # A fresh machine without postgresql-client: pgserver ships psql too.
    assert pg.bindir is not None, "no psql on PATH and no bundled one"
    return str(pg.bindir / "psql")


def psql(pg: PgCluster, where: Any, *args: str, user: str | None = None) -> Run:
    """Run psql against `where` (pg or a ProxyHandle) with no psqlrc and fixed formatting."""
    params = where.params(user=user)
    env = {
        **os.environ,
        "PGPASSWORD": params["password"],
        "PGAPPNAME": "psql-test",
        "PGCONNECT_TIMEOUT": "10",
        "LC_ALL": "C.UTF-8",
    }
    env.pop("PGSERVICE", None)
    cmd = [psql_binary(pg), "-X", "-h", params["host"], "-p", str(params["port"])]
    cmd += ["-U", params["user"], "-d", params["database"], *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def both(pg: PgCluster, proxy: Any, *args: str) -> Run:
    """Run direct and through the proxy; they must agree exactly. Returns the proxy's run."""
    direct = psql(pg, pg, *args)
    via = psql(pg, proxy, *args)
    assert via == direct
    return via


@pytest.fixture(scope="module")
def psql_table(pg: PgCluster) -> Iterator[str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(
            f"""CREATE TABLE {TABLE} (
                id integer PRIMARY KEY,
                name text NOT NULL,
                price numeric(8,2) DEFAULT 0 CHECK (price >= 0)
            )"""
        )
        conn.execute(f"CREATE INDEX {TABLE}_name_idx ON {TABLE} (name)")
        conn.execute(f"COMMENT ON TABLE {TABLE} IS 'things psql lists'")
        conn.execute(f"COMMENT ON COLUMN {TABLE}.name IS 'display name'")
        conn.execute(f"INSERT INTO {TABLE} VALUES (1, 'apple', 1.50), (2, 'pear', 2.25)")
    yield TABLE
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")


async def test_select(pg: PgCluster, endpoint: Any, run_sync: Any, psql_table: str) -> None:
    run = await run_sync(
        both, pg, endpoint, "-A", "-c", f"SELECT id, name FROM {TABLE} ORDER BY id"
    )
    assert run == Run(0, "id|name\n1|apple\n2|pear\n(2 rows)\n", "")


async def test_multi_statement_c(pg: PgCluster, endpoint: Any, run_sync: Any) -> None:
    run = await run_sync(
        both, pg, endpoint, "-A", "-t", "-c", "SELECT 1; SELECT 'two'; SELECT 3 WHERE false"
    )
    assert run.code == 0
    assert run.out.splitlines()[:2] == ["1", "two"]


async def test_backslash_d(pg: PgCluster, endpoint: Any, run_sync: Any, psql_table: str) -> None:
    listing = await run_sync(both, pg, endpoint, "-c", r"\d")
    assert f" public | {TABLE} | table | postgres" in listing.out
    tables = await run_sync(both, pg, endpoint, "-c", r"\dt")
    assert f" public | {TABLE} | table | postgres" in tables.out


async def test_backslash_d_table(
    pg: PgCluster, endpoint: Any, run_sync: Any, psql_table: str
) -> None:
    desc = await run_sync(both, pg, endpoint, "-c", rf"\d {TABLE}")
    assert f'"{TABLE}_pkey" PRIMARY KEY, btree (id)' in desc.out
    assert f'"{TABLE}_name_idx" btree (name)' in desc.out
    assert f'"{TABLE}_price_check" CHECK (price >= 0::numeric)' in desc.out
    plus = await run_sync(both, pg, endpoint, "-c", rf"\d+ {TABLE}")
    assert "display name" in plus.out
    assert "Access method: heap" in plus.out


async def test_copy_out_and_in(
    pg: PgCluster, endpoint: Any, run_sync: Any, psql_table: str, tmp_path: Path
) -> None:
    out = await run_sync(both, pg, endpoint, "-c", rf"\copy {TABLE} TO STDOUT WITH (FORMAT csv)")
    assert out == Run(0, "1,apple,1.50\n2,pear,2.25\n", "")

    src = tmp_path / "in.csv"
    src.write_text("".join(f"{i},item{i},{i}.05\n" for i in range(1000, 3000)))
    target = "psql_copy_target"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {target}")
        conn.execute(f"CREATE TABLE {target} (LIKE {TABLE})")
    # Through the proxy only: loading twice would double the rows.
    run = await run_sync(
        psql, pg, endpoint, "-c", rf"\copy {target} FROM '{src}' WITH (FORMAT csv)"
    )
    assert run == Run(0, "COPY 2000\n", "")
    dump = tmp_path / "out.csv"
    run = await run_sync(
        psql, pg, endpoint, "-c", rf"\copy (SELECT * FROM {target} ORDER BY id) TO '{dump}' CSV"
    )
    assert run == Run(0, "COPY 2000\n", "")
    assert dump.read_text() == src.read_text()


async def test_copy_in_bad_row_fails_cleanly(
    pg: PgCluster, endpoint: Any, run_sync: Any, psql_table: str, tmp_path: Path
) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("10,ok,1\n11,bad,not-a-number\n")
    run = await run_sync(
        both, pg, endpoint, "-v", "ON_ERROR_STOP=1", "-c", rf"\copy {TABLE} FROM '{src}' CSV"
    )
    assert run.code == 1
    assert 'invalid input syntax for type numeric: "not-a-number"' in run.err
    count = await run_sync(both, pg, endpoint, "-A", "-t", "-c", f"SELECT count(*) FROM {TABLE}")
    assert count.out == "2\n"


SCRIPT = """\
SELECT 'before' AS step;
SELECT 1/0;
SELECT 'after' AS step;
"""


async def test_on_error_stop(pg: PgCluster, endpoint: Any, run_sync: Any, tmp_path: Path) -> None:
    script = tmp_path / "script.sql"
    script.write_text(SCRIPT)
    stop = await run_sync(
        both, pg, endpoint, "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", str(script)
    )
    assert stop.code == 3
    assert stop.out == "before\n"
    assert "ERROR:  division by zero" in stop.err
    go_on = await run_sync(both, pg, endpoint, "-A", "-t", "-f", str(script))
    assert go_on.code == 0
    assert go_on.out == "before\nafter\n"


async def test_transaction_script(
    pg: PgCluster, endpoint: Any, run_sync: Any, tmp_path: Path
) -> None:
    script = tmp_path / "tx.sql"
    script.write_text(
        "CREATE TEMP TABLE t (x int);\n"
        "BEGIN;\nINSERT INTO t VALUES (1);\nSELECT nope;\nROLLBACK;\n"
        "BEGIN;\nINSERT INTO t VALUES (2);\nCOMMIT;\n"
        "SELECT string_agg(x::text, ',') FROM t;\n"
    )
    run = await run_sync(both, pg, endpoint, "-A", "-t", "-q", "-f", str(script))
    assert run.code == 0
    assert run.out == "2\n"
    assert 'column "nope" does not exist' in run.err
    assert "current transaction is aborted" not in run.err
