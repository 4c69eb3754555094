"""OIDC tokens as passwords (`proxy` auth mode): check a signed JWT, give its user and groups.

A client sends the token its identity provider issued as its password
(over TLS only: see proxy/login.py). The signature is checked against the
provider's JSON Web Key Set (`oidc_jwks`: a file, or an https URL fetched
with a timeout and read again when a token names a key id it does not
know, at most every `oidc_jwks_min_refresh` seconds, so forged key ids
cannot turn the proxy into a request flood). Issuer, audience, expiry and not-before
are required and checked; only asymmetric algorithms are accepted (`none`
and shared-secret HMAC never are, whatever the token's header says).

Errors name the reason (`token has expired`), never the token.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import Any

import jwt

from proxy.identity import Identity, from_source
from proxy.idsrc.resolver import IdentityUnavailable

SOURCE = "oidc"
MAX_TOKEN = 16 * 1024
LEEWAY = 30.0  # seconds of clock skew tolerated on exp/nbf/iat
# Algorithms by key type; the key's own `alg`, when present, narrows it to one.
_ALGORITHMS = {
    "RSA": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
    "EC": ["ES256", "ES384", "ES512"],
    "OKP": ["EdDSA"],
}


class TokenRejected(Exception):
    """The token does not prove who the client says it is; the reason is safe to show."""


def looks_like_jwt(password: str) -> bool:
    parts = password.split(".")
    return len(parts) == 3 and all(parts) and len(password) <= MAX_TOKEN


class TokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks: str,
        user_claim: str,
        groups_claim: str,
        timeout: float,
        min_refresh: float = 30.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwks
        self.user_claim = user_claim
        self.groups_claim = groups_claim
        self.timeout = timeout
        self.min_refresh = min_refresh
        self._keys: dict[str, jwt.PyJWK] = {}
        self._unnamed: list[jwt.PyJWK] = []  # keys without a kid
        self._fetched: float | None = None

    @property
    def is_url(self) -> bool:
        return self.jwks.startswith("https://")  # settings refuse http://

    async def verify(self, token: str, user: str) -> Identity:
        """The token's groups, if it is valid and names `user`; TokenRejected otherwise.

        IdentityUnavailable when the key set cannot be read (the provider is
        down): the login is refused either way, but the audit says which.
        """
        if not looks_like_jwt(token):
            raise TokenRejected("not a JSON Web Token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("malformed token header") from None
        kid = header.get("kid")
        key = await self._key(kid if isinstance(kid, str) else None)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=_algorithms(key),
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("token audience does not match") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("token issuer does not match") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("token signature does not verify") from None
        except jwt.MissingRequiredClaimError as e:
            raise TokenRejected(f"token lacks the {e.claim} claim") from None
        except jwt.PyJWTError as e:
            raise TokenRejected(f"invalid token ({type(e).__name__})") from None
        subject = claims.get(self.user_claim)
        if not isinstance(subject, str) or subject != user:
            raise TokenRejected(f"token's {self.user_claim} claim is not the user logging in")
        return from_source(SOURCE, _groups(claims.get(self.groups_claim)), {})

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        found = self._find(kid)
        due = self._fetched is None or time.monotonic() - self._fetched >= self.min_refresh
        if found is None and due:
            await self.refresh()
            found = self._find(kid)
        if found is None:
            raise TokenRejected("token signed with a key not in the key set")
        return found

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        return self._unnamed[0] if len(self._unnamed) == 1 else None

    async def refresh(self) -> None:
        """Read the key set again (file or URL); IdentityUnavailable when it cannot be."""
        self._fetched = time.monotonic()
        try:
            raw = await asyncio.wait_for(asyncio.to_thread(self._read), self.timeout)
            keys = jwt.PyJWKSet.from_json(raw).keys
        except TimeoutError:
            raise IdentityUnavailable(
                f"oversight: the OIDC key set did not answer in {self.timeout:g}s; login refused"
            ) from None
        except (OSError, ValueError, jwt.PyJWTError) as e:
            raise IdentityUnavailable(
                "oversight: the OIDC key set cannot be read; login refused",
                detail=type(e).__name__,
            ) from None
        usable = [k for k in keys if k.key_type in _ALGORITHMS]
        self._keys = {k.key_id: k for k in usable if k.key_id}
        self._unnamed = [k for k in usable if not k.key_id]

    def _read(self) -> str:
        if not self.is_url:
            with open(self.jwks, encoding="utf-8") as f:
                return f.read(1 << 20)
        req = urllib.request.Request(self.jwks, headers={"Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            body: bytes = resp.read(1 << 20)
        return body.decode("utf-8")


def _algorithms(key: jwt.PyJWK) -> list[str]:
    allowed = _ALGORITHMS.get(key.key_type or "", [])
    alg = key.algorithm_name
    return [alg] if alg in allowed else allowed


def _groups(value: object) -> frozenset[str]:
    """A groups claim: a list of strings or one string; anything else is refused."""
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list) and all(isinstance(g, str) for g in value):
        return frozenset(value)
    raise TokenRejected("token's groups claim is not a list of names")
