"""The PostgreSQL JDBC driver (pgjdbc) through the proxy with a policy active.

pgjdbc speaks only the extended protocol: unnamed statements until a
PreparedStatement has run `prepareThreshold` times (default 5), then named
server-side statements (S_1, S_2...) that later runs only Bind/Execute; it
sends batches as many Parse/Bind/Execute before one Sync, reads a ResultSet
with a fetch size in a transaction through a portal (Execute with a row
limit, PortalSuspended), and DBeaver-style DatabaseMetaData calls run large
catalog queries. tests/clients/jdbc/CompatCheck.java does all of that as
the `compat_proxy` analyst and prints key=value lines; it is compiled once
per module with javac against Debian's libpostgresql-jdbc-java.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from clientrun import key_values, require, run
from conftest import COMPAT_PEOPLE, COMPAT_USER, MASKED

SOURCE = Path(__file__).parent.parent / "clients" / "jdbc" / "CompatCheck.java"
DRIVER_JAR = Path(os.environ.get("OVERSIGHT_TEST_PGJDBC", "/usr/share/java/postgresql.jar"))
INSTALL = "apt-get install default-jdk-headless libpostgresql-jdbc-java"


def people(ids: range) -> str:
    return ";".join(f"{i}|{COMPAT_PEOPLE[i - 1][1]}|{MASKED}" for i in ids)


@pytest.fixture(scope="module")
def classpath(tmp_path_factory: pytest.TempPathFactory) -> str:
    """CompatCheck compiled into a temporary directory; the java classpath to run it."""
    javac, java = shutil.which("javac"), shutil.which("java")
    require(javac is not None and java is not None, "a JDK (java, javac)", INSTALL)
    require(DRIVER_JAR.is_file(), f"the PostgreSQL JDBC driver ({DRIVER_JAR})", INSTALL)
    assert javac is not None
    out = tmp_path_factory.mktemp("jdbc")
    # No proxy is running in this fixture, so a blocking compile is fine here.
    cmd = [javac, "-J-XX:TieredStopAtLevel=1", "-Xlint:all", "-Werror"]
    done = subprocess.run(
        [*cmd, "-cp", str(DRIVER_JAR), "-d", str(out), str(SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return f"{DRIVER_JAR}{os.pathsep}{out}"


async def compat_check(proxy: Any, classpath: str, *scenarios: str) -> dict[str, str]:
    """Run CompatCheck against the proxy as COMPAT_USER; its key=value output."""
    params = proxy.params(user=COMPAT_USER)
    env = {
        **os.environ,
        "PGHOST": params["host"],
        "PGPORT": str(params["port"]),
        "PGDATABASE": params["database"],
        "PGUSER": params["user"],
        "PGPASSWORD": params["password"],
    }
    java = shutil.which("java")
    assert java is not None
    # A short-lived JVM: the C1 compiler only and the serial GC start fastest.
    fast = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
    done = await run([java, *fast, "-cp", classpath, "CompatCheck", *scenarios], env=env)
    assert done.code == 0, f"CompatCheck failed:\n{done.out}\n{done.err}"
    return key_values(done.out)


async def test_masked_statement_and_prepared(compat_proxy: Any, classpath: str) -> None:
    got = await compat_check(compat_proxy, classpath, "masked")
    assert got["masked.statement"] == people(range(1, 11))
    assert got["masked.filter"] == "10"
    # Default threshold 5: runs 1-4 unnamed, then a named server-side statement.
    one_each = ";".join(people(range(i, i + 1)) for i in range(1, 9))
    assert got["masked.prepared_default.threshold"] == "5"
    assert got["masked.prepared_default.server_prepared"] == "true"
    assert got["masked.prepared_default.rows"] == one_each
    assert got["masked.prepared_default.named_on_server"] == "S_1"
    assert got["masked.prepared_1.threshold"] == "1"
    assert got["masked.prepared_1.server_prepared"] == "true"
    assert got["masked.prepared_1.rows"] == one_each
    assert got["masked.prepared_1.named_on_server"] == "S_1"


async def test_denied_and_connection_goes_on(compat_proxy: Any, classpath: str) -> None:
    got = await compat_check(compat_proxy, classpath, "denied")
    assert got["denied.autocommit"] == "true"
    assert got["denied.statement.sqlstate"] == "42501"
    assert got["denied.statement.message"].startswith(
        "ERROR: oversight: blocked by compat-people: column compat.people.notes is denied"
    )
    assert got["denied.statement.next"] == MASKED
    assert got["denied.prepared.sqlstate"] == "42501"
    assert got["denied.prepared.next"] == people(range(3, 4))
    assert got["denied.tx.sqlstate"] == "42501"
    assert got["denied.tx.after_rollback"] == "0"
    assert got["denied.tx.next"] == MASKED
    assert got["denied.closed"] == "false"


async def test_database_metadata(compat_proxy: Any, classpath: str) -> None:
    got = await compat_check(compat_proxy, classpath, "metadata")
    assert got["metadata.product"] == "PostgreSQL"
    assert got["metadata.schemas_has_compat"] == "true"
    assert got["metadata.tables"] == "compat.people:TABLE,compat.scratch:TABLE"
    assert got["metadata.columns"] == "1:id:int4:NO,2:name:text:NO,3:ssn:text:YES,4:notes:text:YES"
    assert got["metadata.next"] == MASKED


async def test_database_metadata_keys(compat_proxy: Any, classpath: str) -> None:
    got = await compat_check(compat_proxy, classpath, "keys")
    assert got["keys.primary"] == "id:people_pkey"
    assert got["keys.indexes"] == "people_pkey:id:false"


async def test_fetch_size_and_batch(compat_proxy: Any, classpath: str) -> None:
    got = await compat_check(compat_proxy, classpath, "fetch", "batch")
    assert got["fetch.statement"] == people(range(1, 11))
    assert got["fetch.prepared"] == people(range(1, 11))
    assert got["fetch.next"] == "10"
    assert got["batch.counts"] == "1,1,1,1,1,1,1"
    assert got["batch.rows"] == "7|batch 3200|batch 3206"
    assert got["batch.deleted"] == "7"
