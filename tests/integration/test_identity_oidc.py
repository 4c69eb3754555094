"""OIDC tokens as passwords in `proxy` auth mode, signed with keys made here.

The proxy runs with TLS on the client leg (tokens are only asked for over
TLS) and a JWKS file; dave's groups come from the token's `groups` claim and
decide whether the analysts' mask applies. Expired, not-yet-valid, foreign,
tampered, wrong-audience, wrong-issuer and someone-else's tokens are refused
with the reason, audited as auth_failure, and never written anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa
from pgcluster import PgCluster

from proxy.catalog import load_catalog
from proxy.enforce import Enforcer
from proxy.rules import load_rules
from proxy.scram import make_verifier

ISSUER, AUDIENCE = "https://idp.example.test", "oversight"
SCHEMA = "identity_oidc"
RULES = f"""\
version: 1
rules:
  - id: analysts-mask
    match: {{groups: [analysts]}}
    table: {SCHEMA}.people
    columns: {{ssn: redact}}
"""


class Issuer:
    """A signing key and its JWKS entry, as an identity provider holds them."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        d: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {**d, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "dave", "iat": now, "exp": now + 600}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": self.kid})


@pytest.fixture(scope="module")
def idp() -> Issuer:
    return Issuer("k1")


@pytest.fixture(scope="module")
def table(pg: PgCluster) -> Iterator[str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        c.execute(f"CREATE SCHEMA {SCHEMA}")
        c.execute(f"CREATE TABLE {SCHEMA}.people (id int, ssn text)")
        c.execute(f"INSERT INTO {SCHEMA}.people VALUES (1, 'ssn-1')")
    yield SCHEMA
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("oidc-tls")
    cert = trustme.CA().issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    return str(d / "cert.pem"), str(d / "key.pem")


@pytest.fixture
async def proxy(
    pg: PgCluster,
    table: str,
    idp: Issuer,
    certs: tuple[str, str],
    proxy_factory: Any,
    tmp_path: Path,
) -> AsyncIterator[Any]:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [idp.jwk()]}))
    users = tmp_path / "users.scram"
    users.write_text(f"carol:{make_verifier('carol-pw-1')}\n")
    rules_file = tmp_path / "oidc.yaml"
    rules_file.write_text(RULES)
    hooks = Enforcer(load_rules(rules_file), await load_catalog(pg.dsn()), None)
    yield await proxy_factory(
        hooks=hooks,
        rules=rules_file,
        auth="proxy",
        users_file=str(users),
        tls_cert=certs[0],
        tls_key=certs[1],
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks=str(jwks),
        oidc_jwks_min_refresh=0,
        login_max_failures=0,
    )


def _dsn(p: Any, user: str, password: str, sslmode: str = "require") -> str:
    return (
        f"host={p.host} port={p.port} dbname={p.pg.dbname} user={user} "
        f"password={password} sslmode={sslmode}"
    )


async def _ssn(p: Any, user: str, password: str, sslmode: str = "require") -> str:
    async with await psycopg.AsyncConnection.connect(_dsn(p, user, password, sslmode)) as c:
        cur = await c.execute(f"SELECT ssn FROM {SCHEMA}.people")
        row = await cur.fetchone()
        assert row is not None
        return str(row[0])


def _failures(p: Any) -> list[str]:
    records = [json.loads(line) for line in p.audit_log.read_text().splitlines()]
    return [r["error"] for r in records if r["event"] == "auth_failure"]


async def test_token_groups_decide_the_rules(proxy: Any, idp: Issuer) -> None:
    assert await _ssn(proxy, "dave", idp.token(groups=["analysts"])) == "****"
    assert await _ssn(proxy, "dave", idp.token(groups=["auditors"])) == "ssn-1"
    assert await _ssn(proxy, "dave", idp.token()) == "ssn-1"  # no groups claim: no groups


def _tamper(token: str) -> str:
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["groups"] = ["admins"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


BAD_TOKENS = {
    "expired": (lambda i: i.token(exp=int(time.time()) - 3600), "token has expired"),
    "not yet valid": (lambda i: i.token(nbf=int(time.time()) + 3600), "not valid yet"),
    "foreign key": (lambda i: Issuer(i.kid).token(), "signature does not verify"),
    "tampered": (lambda i: _tamper(i.token(groups=["analysts"])), "signature does not verify"),
    "wrong audience": (lambda i: i.token(aud="someone-else"), "audience does not match"),
    "wrong issuer": (lambda i: i.token(iss="https://evil.test"), "issuer does not match"),
    "another user": (lambda i: i.token(sub="erin"), "sub claim is not the user"),
    "no expiry": (lambda i: i.token(exp=None), "lacks the exp claim"),
    "unknown key": (lambda i: Issuer("k9").token(), "key not in the key set"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_tokens_are_refused_with_the_reason(proxy: Any, idp: Issuer, case: str) -> None:
    make, reason = BAD_TOKENS[case]
    token = make(idp)
    with pytest.raises(psycopg.OperationalError, match=reason):
        await _ssn(proxy, "dave", token)
    await proxy.stop()
    failures = _failures(proxy)
    assert len(failures) == 1 and failures[0].startswith("28P01:") and reason in failures[0]
    assert token not in proxy.audit_log.read_text()


async def test_a_new_signing_key_is_picked_up_from_the_key_set(
    proxy: Any, idp: Issuer, tmp_path: Path
) -> None:
    assert await _ssn(proxy, "dave", idp.token(groups=["analysts"])) == "****"
    rotated = Issuer("k2")
    jwks = Path(proxy.settings.oidc_jwks)
    jwks.write_text(json.dumps({"keys": [idp.jwk(), rotated.jwk()]}))
    assert await _ssn(proxy, "dave", rotated.token(groups=["analysts"])) == "****"


async def test_passwords_still_work_beside_tokens(proxy: Any) -> None:
    assert await _ssn(proxy, "carol", "carol-pw-1") == "ssn-1"  # cleartext over TLS
    assert await _ssn(proxy, "carol", "carol-pw-1", sslmode="disable") == "ssn-1"  # SCRAM
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await _ssn(proxy, "carol", "wrong")


async def test_no_token_is_asked_for_without_tls(proxy: Any, idp: Issuer) -> None:
    """Without TLS the proxy offers SCRAM only, so a token can never be sent in clear."""
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await _ssn(proxy, "dave", idp.token(groups=["analysts"]), sslmode="disable")


async def test_an_unreachable_key_set_refuses_with_28000(
    pg: PgCluster, table: str, certs: tuple[str, str], proxy_factory: Any, idp: Issuer
) -> None:
    hung: list[asyncio.StreamWriter] = []

    async def never_answers(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        hung.append(w)  # accept, then say nothing: a slow identity provider

    slow = await asyncio.start_server(never_answers, "127.0.0.1", 0)
    port = slow.sockets[0].getsockname()[1]
    try:
        p = await proxy_factory(
            auth="proxy",
            tls_cert=certs[0],
            tls_key=certs[1],
            oidc_issuer=ISSUER,
            oidc_audience=AUDIENCE,
            oidc_jwks=f"https://127.0.0.1:{port}/jwks.json",
            identity_timeout=0.5,
        )
        with pytest.raises(psycopg.OperationalError, match="key set did not answer"):
            await _ssn(p, "dave", idp.token())
        await p.stop()
        assert [e[:6] for e in _failures(p)] == ["28000:"]
    finally:
        slow.close()
        for w in hung:
            w.close()


async def test_a_key_set_that_is_down_refuses_with_28000(
    pg: PgCluster, table: str, certs: tuple[str, str], proxy_factory: Any, idp: Issuer
) -> None:
    closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()  # nothing listens there now: connection refused
    p = await proxy_factory(
        auth="proxy",
        tls_cert=certs[0],
        tls_key=certs[1],
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks=f"https://127.0.0.1:{port}/jwks.json",
    )
    with pytest.raises(psycopg.OperationalError, match="key set cannot be read"):
        await _ssn(p, "dave", idp.token())
    await p.stop()
    assert [e[:6] for e in _failures(p)] == ["28000:"]
