"""What the peer suites run: each suite's CI jobs as phases, and where their tests come from."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

SUPERUSER = "postgres"  # every suite logs in as this superuser
SUITES = ("pg8000", "psycopg2", "asyncpg")


@dataclass(frozen=True)
class Phase:
    """One job of a suite's CI: what it runs and the server configuration it needs."""

    suite: str
    name: str
    paths: tuple[str, ...]
    hba: str = "scram-sha-256"  # method of the host lines the suite logs in through
    encryption: str = "scram-sha-256"  # password_encryption for the superuser's password
    ssl: bool = False
    extra: tuple[str, ...] = ()  # more pytest arguments
    env: tuple[tuple[str, str], ...] = ()  # more environment for the suite
    port_5432: bool = False  # the suite hard-codes localhost:5432: forward it to the target
    password: str | None = None  # the superuser password the suite hard-codes


PG8000_AUTH = ("test/dbapi/auth", "test/native/auth", "test/legacy/auth")


def _auth(kind: str) -> tuple[str, ...]:
    return tuple(f"{d}/test_{kind}.py" for d in PG8000_AUTH)


# pg8000's .github/workflows/test.yml: main-test, auth-test (4 methods), ssl-test (2).
PHASES = [
    Phase(
        "pg8000",
        "main",
        ("test",),
        extra=(*tuple(f"--ignore={d}" for d in PG8000_AUTH), "--ignore=test/test_readme.py"),
    ),
    Phase("pg8000", "auth-md5", _auth("md5"), hba="md5", encryption="md5"),
    Phase("pg8000", "auth-password", _auth("password"), hba="password"),
    Phase("pg8000", "auth-scram-sha-256", _auth("scram-sha-256")),
    Phase("pg8000", "auth-gss", _auth("gss"), hba="gss"),
    Phase("pg8000", "ssl-md5", _auth("md5_ssl"), hba="md5", encryption="md5", ssl=True),
    Phase("pg8000", "ssl-scram-sha-256", _auth("scram-sha-256_ssl"), ssl=True),
    # The README's doctests (the static-test job): localhost:5432, password cpsnow, TLS.
    Phase(
        "pg8000",
        "readme",
        ("test/test_readme.py",),
        ssl=True,
        env=(("LOGNAME", SUPERUSER),),
        port_5432=True,
        password="cpsnow",
    ),
    # psycopg2's own runner: tests/__init__.py's test_suite(), as `make check` does;
    # for psycopg2 `paths` filters test ids by substring ("" runs them all).
    Phase("psycopg2", "main", ("",)),
    # Its replication tests run only with PSYCOPG2_TEST_REPL_DSN set ("": the test DSN).
    Phase(
        "psycopg2",
        "replication",
        ("tests.test_replication.",),
        env=(("PSYCOPG2_TEST_REPL_DSN", ""),),
    ),
    # asyncpg's `python -m unittest tests.suite` with PGHOST set (RunningCluster); for
    # unittest phases `extra` are test id substrings left out: flake8/mypy of the sdist.
    Phase("asyncpg", "main", ("",), extra=("test__sourcecode.",)),
    # Not a job of asyncpg's CI: the same suite over TLS (asyncpg negotiates it with
    # sslmode=prefer, its default; require makes sure), the proxy's TLS to clients too.
    Phase(
        "asyncpg",
        "tls",
        ("",),
        ssl=True,
        extra=("test__sourcecode.",),
        env=(("PGSSLMODE", "require"),),
    ),
]


def driver_version(suite: str) -> str:
    dist = {"pg8000": "pg8000", "psycopg2": "psycopg2-binary"}.get(suite, suite)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return metadata.version(suite)  # a source-built psycopg2


def fetch_source(suite: str, version: str, cache: Path) -> Path:
    """The unpacked sdist of `suite`=`version` in `cache`, downloaded once."""
    root = cache / f"{suite}-{version}"
    if root.is_dir():
        return root
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["-d", str(cache), f"{suite}=={version}"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    with tarfile.open(cache / f"{suite}-{version}.tar.gz") as tar:
        tar.extractall(cache, filter="data")
    return root


def suite_root(suite: str, source: Path) -> Path:
    """Where the suite runs from: asyncpg's sdist has its uncompiled package beside tests/,
    which would shadow the installed driver, so its tests run from a directory of their own."""
    if suite != "asyncpg":
        return source
    root = source.parent / f"{source.name}-tests"
    root.mkdir(exist_ok=True)
    link = root / "tests"
    if not link.exists():
        link.symlink_to(source / "tests")
    return root
