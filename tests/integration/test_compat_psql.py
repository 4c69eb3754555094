"""psql through the proxy with a policy active (the `compat_proxy` scenario).

psql's backslash commands send SQL of their own that the policy engine must
let through: `\\d` and `\\dt` query the catalog, `\\copy` runs COPY ... TO
STDOUT / FROM STDIN, `\\watch` and `\\g` re-send the query buffer (simple
protocol, again and again in one session), and `\\gexec` / `\\gset` feed
results back into the session. Each test runs one psql session from a
script on stdin with ON_ERROR_STOP off, and asserts the masked values, the
refusal of the denied column (psql's SQLSTATE variable says 42501) and that
the statements after it still run. Plain psql without a policy, compared
with PostgreSQL direct, is test_clients_psql.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from clientrun import Run, require, run
from conftest import COMPAT_PEOPLE, COMPAT_USER, MASKED
from pgcluster import PgCluster

REFUSED = "ERROR:  oversight: blocked by compat-people: column compat.people.notes is denied"


def psql_binary(pg: PgCluster) -> str:
    found = shutil.which("psql")
    if found is None and pg.bindir is not None and (pg.bindir / "psql").exists():
        found = str(pg.bindir / "psql")  # pgserver ships psql too
    require(found is not None, "psql", "apt-get install postgresql-client")
    assert found is not None
    return found


async def psql(pg: PgCluster, proxy: Any, script: str, *args: str) -> Run:
    """One psql session as COMPAT_USER running `script` from stdin; errors do not stop it."""
    params = proxy.params(user=COMPAT_USER)
    env = {
        **os.environ,
        "PGPASSWORD": params["password"],
        "PGAPPNAME": "psql-compat",
        "PGCONNECT_TIMEOUT": "10",
        "LC_ALL": "C.UTF-8",
    }
    for name in ("PGSERVICE", "PGOPTIONS", "PGSSLMODE"):
        env.pop(name, None)
    cmd = [psql_binary(pg), "-X", "-h", params["host"], "-p", str(params["port"])]
    cmd += ["-U", params["user"], "-d", params["database"], "-v", "ON_ERROR_STOP=0"]
    return await run([*cmd, *args, "-f", "-"], env=env, stdin=script)


def errors(run: Run) -> list[str]:
    return [line for line in run.err.splitlines() if "ERROR:" in line]


async def test_describe_and_list(pg: PgCluster, compat_proxy: Any) -> None:
    script = (
        "\\d compat.people\n"
        "\\dt compat.*\n"
        "\\d+ compat.scratch\n"
        "SELECT id, ssn FROM compat.people WHERE id = 1;\n"
    )
    out = await psql(pg, compat_proxy, script)
    assert out.code == 0
    assert errors(out) == []
    assert 'Table "compat.people"' in out.out
    # Describing a table names its columns, the denied one too: only data is governed.
    for column, kind, nullable in [
        ("id", "integer", "not null"),
        ("name", "text", "not null"),
        ("ssn", "text", ""),
        ("notes", "text", ""),
    ]:
        assert any(
            [c.strip() for c in line.split("|")][:4] == [column, kind, "", nullable]
            for line in out.out.splitlines()
        ), f"\\d lacks column {column}"
    assert '"people_pkey" PRIMARY KEY, btree (id)' in out.out
    assert f" compat | people  | table | {pg.user}" in out.out
    assert f" compat | scratch | table | {pg.user}" in out.out
    assert "(2 rows)" in out.out
    assert 'Table "compat.scratch"' in out.out
    assert "Access method: heap" in out.out
    assert out.out.rstrip().endswith(f"1 | {MASKED}\n(1 row)")


async def test_masked_denied_and_session_goes_on(pg: PgCluster, compat_proxy: Any) -> None:
    script = (
        "SELECT id, name, ssn FROM compat.people WHERE id <= 3 ORDER BY id;\n"
        "SELECT id, notes FROM compat.people WHERE id = 1;\n"
        "\\echo sqlstate=:SQLSTATE error=:ERROR\n"
        "SELECT id, ssn FROM compat.people WHERE id = 10;\n"
        "\\echo sqlstate=:SQLSTATE error=:ERROR\n"
        # Filters see the mask, not the value: no real ssn matches.
        "SELECT count(*) FROM compat.people WHERE ssn LIKE '001%';\n"
        "DELETE FROM compat.scratch WHERE id = 2100;\n"
        "BEGIN;\n"
        "INSERT INTO compat.scratch VALUES (2100, 'rolled back');\n"
        "SELECT notes FROM compat.people;\n"
        "ROLLBACK;\n"
        "SELECT 'scratch', count(*) FROM compat.scratch WHERE id = 2100;\n"
    )
    out = await psql(pg, compat_proxy, script, "-A", "-t", "-q")
    assert out.code == 0
    assert out.out.splitlines() == [
        f"1|person 1|{MASKED}",
        f"2|person 2|{MASKED}",
        f"3|person 3|{MASKED}",
        "sqlstate=42501 error=true",
        f"10|{MASKED}",
        "sqlstate=00000 error=false",
        "0",
        "scratch|0",
    ]
    assert errors(out) == [f"psql:<stdin>:2: {REFUSED}", f"psql:<stdin>:10: {REFUSED}"]


async def test_copy_out_and_in(pg: PgCluster, compat_proxy: Any, tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    columns = tmp_path / "columns.txt"
    denied = tmp_path / "denied.csv"
    src = tmp_path / "scratch.csv"
    src.write_text("".join(f"{i},copied {i}\n" for i in range(2200, 2250)))
    script = (
        "DELETE FROM compat.scratch WHERE id BETWEEN 2200 AND 2299;\n"
        f"\\copy (SELECT id, name, ssn FROM compat.people ORDER BY id) TO '{people}' "
        "WITH (FORMAT csv)\n"
        f"\\copy compat.people (id, ssn) TO '{columns}'\n"
        f"\\copy (SELECT id, notes FROM compat.people) TO '{denied}' WITH (FORMAT csv)\n"
        "\\echo sqlstate=:SQLSTATE\n"
        f"\\copy compat.scratch FROM '{src}' WITH (FORMAT csv)\n"
        "SELECT count(*), min(label), max(label) FROM compat.scratch "
        "WHERE id BETWEEN 2200 AND 2299;\n"
        "DELETE FROM compat.scratch WHERE id BETWEEN 2200 AND 2299;\n"
    )
    out = await psql(pg, compat_proxy, script, "-A", "-t")
    assert out.code == 0
    assert out.out.splitlines() == [
        "DELETE 0",
        "COPY 10",
        "COPY 10",
        "sqlstate=42501",
        "COPY 50",
        "50|copied 2200|copied 2249",
        "DELETE 50",
    ]
    assert errors(out) == [f"psql:<stdin>:4: {REFUSED}"]
    assert people.read_text() == "".join(f"{i},{n},{MASKED}\n" for i, n, _, _ in COMPAT_PEOPLE)
    assert columns.read_text() == "".join(f"{i}\t{MASKED}\n" for i, *_ in COMPAT_PEOPLE)
    assert not denied.exists() or denied.read_text() == ""


WATCH_COUNTER = "oversight_test.watch"
# Each run bumps a session setting; the 4th divides by zero, which ends \watch
# in every psql version (psql 15 has no iteration count).
WATCHED = (
    "SELECT id, name, ssn, 1/(4 - set_config("
    f"'{WATCH_COUNTER}', (coalesce(nullif(current_setting('{WATCH_COUNTER}', true), ''), '0')"
    "::int + 1)::text, false)::int) AS left FROM compat.people WHERE id = 5"
)


async def test_watch_and_repeats(pg: PgCluster, compat_proxy: Any) -> None:
    script = (
        f"{WATCHED} \\watch 0.05\n"
        "SELECT 'after watch', ssn FROM compat.people WHERE id = 6;\n"
        "SELECT id, ssn FROM compat.people WHERE id = 7 \\g\n"
        "\\g\n"
        "\\g\n"
        "SELECT id, notes FROM compat.people WHERE id = 7 \\g\n"
        "\\echo sqlstate=:SQLSTATE\n"
        "SELECT ssn AS masked_ssn, name AS person FROM compat.people WHERE id = 8 \\gset\n"
        "\\echo gset=:masked_ssn/:person\n"
        "SELECT format('SELECT id, ssn FROM compat.people WHERE id = %s', id) "
        "FROM compat.people WHERE id IN (9, 10) ORDER BY id \\gexec\n"
        "SELECT 'done';\n"
    )
    out = await psql(pg, compat_proxy, script, "-A", "-t")
    assert out.code == 0
    lines = [line for line in out.out.splitlines() if line]
    assert lines == [
        f"5|person 5|{MASKED}|0",
        f"5|person 5|{MASKED}|0",
        f"5|person 5|{MASKED}|1",
        f"after watch|{MASKED}",
        f"7|{MASKED}",
        f"7|{MASKED}",
        f"7|{MASKED}",
        "sqlstate=42501",
        f"gset={MASKED}/person 8",
        f"9|{MASKED}",
        f"10|{MASKED}",
        "done",
    ]
    assert errors(out) == [
        "psql:<stdin>:1: ERROR:  division by zero",
        f"psql:<stdin>:6: {REFUSED}",
    ]
