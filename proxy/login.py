"""Client authentication in `proxy` auth mode: SCRAM verifiers, OIDC tokens, LDAP, the rate limit.

Without OIDC or LDAP the client runs SCRAM-SHA-256 against the verifiers of
`users_file` (proxy/scram.py). With OIDC or LDAP configured and the client
on TLS, the proxy asks for a cleartext password instead (a token or a
directory password cannot be used in SCRAM): a JWT is checked as a token
(proxy/idsrc/oidc.py), anything else against the user's verifier when
`users_file` has one, else by a bind as the user's directory entry
(proxy/idsrc/ldap.py). On a connection without TLS neither is ever asked
for, so they never cross the network in clear: such clients get SCRAM as
before.

Every failure counts against the client address and the user
(proxy/idsrc/throttle.py); past the limit the login is refused before any
secret is asked for. Errors carry the reason, never the secret.
"""

from __future__ import annotations

import asyncio
import hmac

from proxy import messages as m
from proxy.errors import AuthFailed, ProtocolViolation, ProxyError
from proxy.identity import Identity
from proxy.idsrc.ldap import LdapSource
from proxy.idsrc.oidc import TokenRejected, TokenVerifier, looks_like_jwt
from proxy.idsrc.throttle import LoginThrottle
from proxy.scram import _MECH, authenticate_client, load_users, parse_verifier
from proxy.settings import Settings
from proxy.streams import read_frame


class TooManyFailures(ProxyError):
    sqlstate = "28000"
    severity = "FATAL"


class ProxyLogin:
    def __init__(
        self,
        verifiers: dict[str, str],
        tokens: TokenVerifier | None = None,
        throttle: LoginThrottle | None = None,
        directory: LdapSource | None = None,
    ) -> None:
        self.verifiers = verifiers
        self.tokens = tokens
        self.throttle = throttle
        self.directory = directory

    async def authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        user: str,
        *,
        client_ip: str,
        client_tls: bool,
        max_message: int,
    ) -> Identity:
        """The client's identity from its token (empty for a password); ProxyError if refused."""
        if self.throttle is not None:
            wait = self.throttle.retry_after(client_ip, user)
            if wait > 0:
                raise TooManyFailures(
                    "oversight: too many failed logins; try again later",
                    detail=f"retry in {wait:.0f}s",
                )
        try:
            return await self._check(reader, writer, user, client_tls, max_message)
        except (AuthFailed, TooManyFailures):
            if self.throttle is not None:
                self.throttle.failed(client_ip, user)
            raise

    async def _check(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        user: str,
        client_tls: bool,
        max_message: int,
    ) -> Identity:
        if (self.tokens is None and self.directory is None) or not client_tls:
            if await authenticate_client(reader, writer, user, self.verifiers, max_message):
                return Identity()
            raise _password_failed(user)
        writer.write(m.auth_request(m.AUTH_CLEARTEXT))
        await writer.drain()
        reply = await read_frame(reader, max_message)
        if reply.type != b"p":
            raise ProtocolViolation("expected a password message")
        secret = m.parse_password(reply.body)
        if self.tokens is not None and looks_like_jwt(secret):
            try:
                return await self.tokens.verify(secret, user)
            except TokenRejected as e:
                raise AuthFailed(f'token authentication failed for user "{user}": {e}') from None
        if self.directory is not None and user not in self.verifiers:
            if not await self.directory.check_password(user, secret):
                raise _password_failed(user)
            return Identity()
        if not _password_matches(secret, self.verifiers.get(user)):
            raise _password_failed(user)
        return Identity()


def proxy_login(settings: Settings) -> ProxyLogin | None:
    """The `proxy` auth mode's checks as configured; None in `passthrough` mode."""
    if settings.auth != "proxy":
        return None
    verifiers = load_users(settings.users_file) if settings.users_file else {}
    tokens = None
    if settings.oidc_issuer and settings.oidc_audience and settings.oidc_jwks:
        tokens = TokenVerifier(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks=settings.oidc_jwks,
            user_claim=settings.oidc_user_claim,
            groups_claim=settings.oidc_groups_claim,
            timeout=settings.identity_timeout,
            min_refresh=settings.oidc_jwks_min_refresh,
        )
    throttle = None
    if settings.login_max_failures > 0:
        throttle = LoginThrottle(settings.login_max_failures, settings.login_failure_window)
    directory = LdapSource(settings) if settings.ldap_url else None
    return ProxyLogin(verifiers, tokens, throttle, directory)


def _password_failed(user: str) -> AuthFailed:
    return AuthFailed(f'password authentication failed for user "{user}"')


def _password_matches(password: str, verifier: str | None) -> bool:
    """A cleartext password against a SCRAM verifier: derive the keys, compare in constant time."""
    try:
        salt, stored, server, iterations = parse_verifier(verifier or "")
    except ValueError:
        # Unknown user: spend the same work, so timing does not say who exists.
        salt, stored, server, iterations = b"\0" * 16, b"", b"", 4096
    _, got_stored, got_server, _ = _MECH.make_auth_info(
        password, iteration_count=iterations, salt=salt
    )
    return hmac.compare_digest(got_stored, stored) and hmac.compare_digest(got_server, server)
