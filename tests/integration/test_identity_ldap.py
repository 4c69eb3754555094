"""The LDAP identity source against a real OpenLDAP slapd (tests/ldapserver.py), over StartTLS.

The proxy runs in `proxy` auth mode with TLS to the client: the password is
checked by a bind as the user's directory entry, and the entry's groups
(memberOf) and departmentNumber (mapped to `region`) drive a row filter that
no `users:` entry defines; in `passthrough` mode PostgreSQL checks the
password and the directory still gives the identity. A directory that is
down, never answers, or shows a certificate from another CA, a name that
matches two entries, and an injected filter are refused or neutralised; no
password ever reaches the log or the audit log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trustme
from ldapserver import BASE, READER_DN, READER_PW, ROOT_PW, Slapd, running_slapd, silent_listener
from pgcluster import PgCluster

from proxy.catalog import load_catalog
from proxy.enforce import Enforcer
from proxy.idsrc import IdentityUnavailable
from proxy.idsrc.ldap import LdapSource
from proxy.rules import RulesError, load_rules
from proxy.settings import Settings

SCHEMA = "identity_ldap"
RULES = f"""\
version: 1
rules:
  - id: analysts-by-region
    match: {{groups: [analysts]}}
    table: {SCHEMA}.sales
    row_filter: "region = :region"
"""


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.fixture(scope="module")
def table(pg: PgCluster) -> Iterator[str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        c.execute(f"CREATE SCHEMA {SCHEMA}")
        c.execute(f"CREATE TABLE {SCHEMA}.sales (id int, region text)")
        c.execute(f"INSERT INTO {SCHEMA}.sales VALUES (1, 'north'), (2, 'south'), (3, 'north')")
    yield SCHEMA
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("ldap-client-tls")
    cert = trustme.CA().issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    return str(d / "cert.pem"), str(d / "key.pem")


def ldap_settings(slapd: Slapd, **kw: Any) -> dict[str, Any]:
    return {
        "ldap_url": slapd.url,
        "ldap_base_dn": BASE,
        "ldap_bind_dn": READER_DN,
        "ldap_bind_password": READER_PW,
        "ldap_ca_file": slapd.ca_file,
        "ldap_attributes": "departmentNumber=region",
        "identity_cache": 0,
        "login_max_failures": 0,
        **kw,
    }


async def make_proxy(
    pg: PgCluster, slapd: Slapd, certs: tuple[str, str], factory: Any, tmp: Path, **kw: Any
) -> Any:
    rules_file = tmp / "ldap.yaml"
    rules_file.write_text(RULES)
    rules = load_rules(rules_file, {"region"})
    hooks = Enforcer(rules, await load_catalog(pg.dsn()), None)
    return await factory(
        hooks=hooks,
        rules=rules_file,
        auth="proxy",
        tls_cert=certs[0],
        tls_key=certs[1],
        **ldap_settings(slapd, **kw),
    )


@pytest.fixture
async def proxy(
    pg: PgCluster,
    slapd: Slapd,
    table: str,
    certs: tuple[str, str],
    proxy_factory: Any,
    tmp_path: Path,
) -> Any:
    return await make_proxy(pg, slapd, certs, proxy_factory, tmp_path)


async def _regions(p: Any, user: str, password: str) -> list[str]:
    dsn = (
        f"host={p.host} port={p.port} dbname={p.pg.dbname} user={user} "
        f"password={password} sslmode=require"
    )
    async with await psycopg.AsyncConnection.connect(dsn) as c:
        cur = await c.execute(f"SELECT region FROM {SCHEMA}.sales ORDER BY id")
        return [str(r[0]) for r in await cur.fetchall()]


def _failures(p: Any) -> list[str]:
    records = [json.loads(line) for line in p.audit_log.read_text().splitlines()]
    return [r["error"] for r in records if r["event"] == "auth_failure"]


async def test_directory_groups_and_attributes_drive_the_row_filter(proxy: Any) -> None:
    assert await _regions(proxy, "alice", "alice-pw-1") == ["north", "north"]
    assert await _regions(proxy, "bob", "bob-pw-1") == ["south"]
    # carol is no analyst: the rule does not apply to her.
    assert await _regions(proxy, "carol", "carol-pw-1") == ["north", "south", "north"]


async def test_wrong_password_unknown_user_and_empty_password_are_refused(proxy: Any) -> None:
    for user, password in [("alice", "bob-pw-1"), ("nobody", "x"), ("*", "alice-pw-1")]:
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            await _regions(proxy, user, password)
    with pytest.raises(psycopg.OperationalError):  # libpq sends no empty password: check it here
        await _regions(proxy, "alice", "")
    assert not await LdapSource(Settings(**ldap_settings(proxy_slapd(proxy)))).check_password(
        "alice", ""
    )
    await proxy.stop()
    failures = _failures(proxy)
    assert len(failures) >= 4 and all(f.startswith("28P01:") for f in failures)


def proxy_slapd(p: Any) -> Any:
    s = p.settings
    return type("S", (), {"url": s.ldap_url, "ca_file": s.ldap_ca_file})


async def test_two_entries_for_one_name_refuse_the_login(proxy: Any) -> None:
    with pytest.raises(psycopg.OperationalError, match="more than one directory entry"):
        await _regions(proxy, "twin", "twin-pw-1")
    await proxy.stop()
    [failure] = _failures(proxy)
    assert failure.startswith("28000:") and "more than one" in failure


async def test_directory_down_refuses_with_28000_and_audits(
    pg: PgCluster,
    slapd: Slapd,
    table: str,
    certs: tuple[str, str],
    proxy_factory: Any,
    tmp_path: Path,
) -> None:
    p = await make_proxy(pg, slapd, certs, proxy_factory, tmp_path)
    slapd.stop()
    try:
        with pytest.raises(psycopg.OperationalError, match="LDAP directory: cannot connect"):
            await _regions(p, "alice", "alice-pw-1")
    finally:
        slapd.start()
    assert await _regions(p, "alice", "alice-pw-1") == ["north", "north"]  # back: let in again
    await p.stop()
    [failure] = _failures(p)
    assert failure.startswith("28000:")


async def test_a_directory_that_never_answers_refuses_within_the_timeout(
    pg: PgCluster,
    slapd: Slapd,
    table: str,
    certs: tuple[str, str],
    proxy_factory: Any,
    tmp_path: Path,
) -> None:
    with silent_listener() as port:
        p = await make_proxy(
            pg, slapd, certs, proxy_factory, tmp_path,
            ldap_url=f"ldap://127.0.0.1:{port}", identity_timeout=1.0,
        )  # fmt: skip
        # The message proves the timeout ended it (a hang would end in the suite's timeout).
        with pytest.raises(psycopg.OperationalError, match="did not answer in 1s"):
            await _regions(p, "alice", "alice-pw-1")
    await p.stop()
    assert _failures(p)[0].startswith("28000:")


async def test_filter_injection_is_escaped(slapd: Slapd) -> None:
    src = LdapSource(Settings(**ldap_settings(slapd)))
    assert src.user_filter_for("*)(uid=*") == r"(uid=\2a\29\28uid=\2a)"
    for name in ["*", "*)(uid=*", "alice)(|(uid=*", "al*"]:
        got = await src.lookup(name)  # a literal, unknown name: nothing, not everybody
        assert not got.groups and not got.attributes
    with pytest.raises(IdentityUnavailable, match="more than one"):
        await src.lookup("twin")  # the same source does see a real double match
    with pytest.raises(IdentityUnavailable, match="has 2 values"):
        await src.lookup("multi")


async def test_no_password_reaches_the_log_or_the_audit_log(
    proxy: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await _regions(proxy, "alice", "alice-pw-1")
    with pytest.raises(psycopg.OperationalError):
        await _regions(proxy, "bob", "bob-pw-wrong-Qk")
    bad = Settings(**ldap_settings(proxy_slapd(proxy), ldap_bind_password="not-the-pw-Vw9"))
    with pytest.raises(IdentityUnavailable) as e:
        await LdapSource(bad).lookup("alice")
    await proxy.stop()
    text = proxy.audit_log.read_text() + caplog.text + str(e.value) + repr(bad)
    for secret in [READER_PW, ROOT_PW, "alice-pw-1", "bob-pw-wrong-Qk", "not-the-pw-Vw9"]:
        assert secret not in text


def test_rules_may_use_attributes_only_a_source_gives(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(RULES)
    with pytest.raises(RulesError, match="unknown attribute :region"):
        load_rules(f)
    assert load_rules(f, {"region"}).rules[0].id == "analysts-by-region"


def test_ldap_settings_refuse_what_would_not_be_safe(slapd: Slapd) -> None:
    good = ldap_settings(slapd)
    bad = {
        "ldap_url": "http://x",
        "ldap_base_dn": "",
        "ldap_user_filter": "uid=x",
        "ldap_attributes": "departmentNumber",
        "ldap_bind_password": None,
    }
    for name, value in bad.items():
        with pytest.raises(ValueError, match=name.removeprefix("ldap_").split("_")[0]):
            Settings(**{**good, name: value})
    assert Settings(**good).source_attributes == {"region"}
    assert not Settings().source_attributes


async def test_passthrough_sessions_get_the_directory_groups(
    pg: PgCluster, slapd: Slapd, table: str, proxy_factory: Any, tmp_path: Path
) -> None:
    """Passthrough: PostgreSQL checks the password; the directory still gives the identity."""
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute("DROP ROLE IF EXISTS bob")
        c.execute("CREATE ROLE bob LOGIN PASSWORD 'bob-pg-pw-1'")
        c.execute(f"GRANT USAGE ON SCHEMA {SCHEMA} TO bob")
        c.execute(f"GRANT SELECT ON {SCHEMA}.sales TO bob")
    try:
        rules_file = tmp_path / "ldap.yaml"
        rules_file.write_text(RULES)
        hooks = Enforcer(load_rules(rules_file, {"region"}), await load_catalog(pg.dsn()), None)
        p = await proxy_factory(hooks=hooks, rules=rules_file, **ldap_settings(slapd))
        dsn = p.dsn(user="bob", password="bob-pg-pw-1")
        async with await psycopg.AsyncConnection.connect(dsn) as c:
            cur = await c.execute(f"SELECT region FROM {SCHEMA}.sales ORDER BY id")
            assert [r[0] for r in await cur.fetchall()] == ["south"]
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute("DROP OWNED BY bob; DROP ROLE bob")


def test_check_and_identity_commands_know_the_directory(
    pg: PgCluster, slapd: Slapd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from proxy.commands.identity import cmd_identity
    from proxy.commands.rules import cmd_check

    f = tmp_path / "r.yaml"
    f.write_text(RULES)
    settings = Settings(upstream=pg.dsn(), rules=str(f), **ldap_settings(slapd))
    assert cmd_check(str(f), None, None, settings.source_attributes) == 0
    assert cmd_check(str(f), None, None) == 1  # without the directory, :region is unknown
    capsys.readouterr()
    assert cmd_identity(settings, load_rules(f, settings.source_attributes), "alice") == 0
    out = capsys.readouterr().out
    assert "analysts  (ldap)" in out and "region = north  (ldap)" in out


async def test_a_directory_certificate_from_another_ca_is_refused(
    slapd: Slapd, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    src = LdapSource(Settings(**ldap_settings(slapd, ldap_ca_file=str(other))))
    with pytest.raises(IdentityUnavailable, match="LDAP directory: cannot connect"):
        await src.lookup("alice")
    with pytest.raises(IdentityUnavailable, match="LDAP directory: cannot connect"):
        await src.check_password("alice", "alice-pw-1")
