"""`oversight identity USER` and `oversight explain --user USER` show where groups come from."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pgcluster import PgCluster

DAVE, TEAM, ANALYSTS = "idc_dave", "idc_team", "idc_analysts"
SCHEMA = "identity_cli"
RULES = f"""\
version: 1
users:
  {DAVE}: {{groups: [local_reviewers], attributes: {{region: north}}}}
rules:
  - id: analysts-mask
    match: {{groups: [{ANALYSTS}]}}
    table: {SCHEMA}.people
    columns: {{ssn: redact}}
"""


def _sql(pg: PgCluster, *statements: str) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


@pytest.fixture(scope="module")
def roles(pg: PgCluster) -> Iterator[None]:
    drop = [f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"]
    drop += [f"DROP ROLE IF EXISTS {r}" for r in (DAVE, TEAM, ANALYSTS)]
    _sql(
        pg,
        *drop,
        f"CREATE ROLE {DAVE} LOGIN",
        f"CREATE ROLE {TEAM} NOLOGIN",
        f"CREATE ROLE {ANALYSTS} NOLOGIN",
        f"GRANT {ANALYSTS} TO {TEAM}",
        f"GRANT {TEAM} TO {DAVE}",
        f"CREATE SCHEMA {SCHEMA}",
        f"CREATE TABLE {SCHEMA}.people (id int, ssn text)",
    )
    yield
    _sql(pg, *drop)


def _cli(pg: PgCluster, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERSIGHT_")}
    env.update(
        OVERSIGHT_UPSTREAM=pg.dsn(),
        OVERSIGHT_RULES=str(rules),
        OVERSIGHT_GROUPS_FROM_ROLES="true",
    )
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def test_identity_names_the_source_of_each_group(
    pg: PgCluster, roles: None, tmp_path: Path
) -> None:
    r = _cli(pg, tmp_path, "identity", DAVE)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"user {DAVE}",
        "groups:",
        f"  {ANALYSTS}  (roles)",
        f"  {TEAM}  (roles)",
        "  local_reviewers  (rules)",
        "attributes:",
        "  region = north  (rules)",
    ]


def test_explain_decides_with_the_role_groups(pg: PgCluster, roles: None, tmp_path: Path) -> None:
    r = _cli(pg, tmp_path, "explain", "--user", DAVE, f"SELECT ssn FROM {SCHEMA}.people")
    assert r.returncode == 0, r.stderr
    assert f"  {ANALYSTS}  (roles)" in r.stdout.splitlines()
    assert "analysts-mask" in r.stdout and "rewrite" in r.stdout


def test_identity_fails_clearly_when_the_upstream_cannot_answer(
    pg: PgCluster, roles: None, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERSIGHT_")}
    env.update(
        OVERSIGHT_UPSTREAM=pg.dsn(password="wrong-password-9"),
        OVERSIGHT_RULES=str(rules),
        OVERSIGHT_GROUPS_FROM_ROLES="true",
    )
    r = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "identity", DAVE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "identity source roles is unavailable" in r.stderr
    assert "wrong-password-9" not in r.stderr + r.stdout
