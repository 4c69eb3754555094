"""node-postgres (npm `pg` with `pg-cursor`) through the proxy with a policy active.

`pg` sends a query without values as a simple Query (several statements in
one allowed), a query with values as Parse/Bind/Describe/Execute/Sync on the
unnamed statement, and a `{name, text, values}` query as a named statement
it parses once per connection and then only binds. `pg-cursor` reads a
portal in batches: Execute with a row limit and Flush, PortalSuspended, and
no Sync until the cursor closes. tests/clients/node/compat.js does all of
that as the `compat_proxy` analyst and prints key=value lines; its packages
come from tests/clients/node/package-lock.json (`npm ci`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from clientrun import key_values, require, run
from conftest import COMPAT_PEOPLE, COMPAT_USER, MASKED

CLIENT_DIR = Path(__file__).parent.parent / "clients" / "node"
INSTALL_NODE = "apt-get install nodejs npm"
INSTALL_PACKAGES = "cd tests/clients/node && npm ci"


def people(ids: range) -> str:
    return ";".join(f"{i}|{COMPAT_PEOPLE[i - 1][1]}|{MASKED}" for i in ids)


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    require(found is not None, "node", INSTALL_NODE)
    for package in ("pg", "pg-cursor"):
        installed = (CLIENT_DIR / "node_modules" / package / "package.json").is_file()
        require(installed, f"the npm package {package}", INSTALL_PACKAGES)
    assert found is not None
    return found


async def compat_js(proxy: Any, node: str, *scenarios: str) -> dict[str, str]:
    """Run compat.js against the proxy as COMPAT_USER; its key=value output."""
    params = proxy.params(user=COMPAT_USER)
    env = {
        **os.environ,
        "PGHOST": params["host"],
        "PGPORT": str(params["port"]),
        "PGDATABASE": params["database"],
        "PGUSER": params["user"],
        "PGPASSWORD": params["password"],
    }
    done = await run([node, "compat.js", *scenarios], env=env, cwd=CLIENT_DIR)
    assert done.code == 0, f"compat.js failed:\n{done.out}\n{done.err}"
    return key_values(done.out)


async def test_simple_extended_and_named(compat_proxy: Any, node: str) -> None:
    got = await compat_js(compat_proxy, node, "queries")
    assert got["queries.simple"] == people(range(1, 11))
    assert got["queries.multi"] == f"2:{people(range(1, 2))}:two"
    assert got["queries.extended"] == people(range(3, 4))
    assert got["queries.extended_fields"] == "id,name,ssn"
    assert got["queries.filter"] == "10"
    assert got["queries.named"] == people(range(1, 7))
    assert got["queries.named_on_server"] == "people-by-id"


async def test_cursor_batches(compat_proxy: Any, node: str) -> None:
    got = await compat_js(compat_proxy, node, "cursor")
    assert got["cursor.batches"] == "3,3,3,1"
    assert got["cursor.rows"] == people(range(1, 11))
    assert got["cursor.denied.code"] == "42501"
    assert got["cursor.next"] == MASKED


async def test_denied_and_client_goes_on(compat_proxy: Any, node: str) -> None:
    got = await compat_js(compat_proxy, node, "denied")
    assert got["denied.simple.code"] == "42501"
    assert got["denied.simple.message"] == (
        "oversight: blocked by compat-people: column compat.people.notes is denied"
    )
    assert got["denied.simple.next"] == MASKED
    assert got["denied.extended.code"] == "42501"
    assert got["denied.extended.next"] == people(range(4, 5))
    assert got["denied.named.code"] == "42501"
    assert got["denied.named.again"] == "42501"
    assert got["denied.named.next"] == people(range(5, 6))


async def test_transaction_error_and_rollback(compat_proxy: Any, node: str) -> None:
    got = await compat_js(compat_proxy, node, "transaction")
    assert got["transaction.denied.code"] == "42501"
    assert got["transaction.denied.after_rollback"] == "0"
    assert got["transaction.error.code"] == "22012"
    assert got["transaction.masked"] == people(range(6, 7))
    assert got["transaction.committed"] == "2"
    assert got["transaction.deleted"] == "2"
