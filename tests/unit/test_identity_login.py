"""Proxy-mode login pieces that need no socket: cleartext vs verifier, token shape, claims."""

from __future__ import annotations

import pytest

from proxy.idsrc.oidc import TokenRejected, _groups, looks_like_jwt
from proxy.login import _password_matches
from proxy.scram import make_verifier


def test_a_cleartext_password_is_checked_against_the_scram_verifier() -> None:
    v = make_verifier("right-pw")
    assert _password_matches("right-pw", v)
    assert not _password_matches("wrong-pw", v)
    assert not _password_matches("right-pw", None)  # unknown user
    assert not _password_matches("right-pw", "not a verifier")


@pytest.mark.parametrize(
    ("text", "jwt"),
    [
        ("a.b.c", True),
        ("password", False),
        ("a..c", False),
        ("a.b.c.d", False),
        ("x" * 20000, False),
    ],
)
def test_what_counts_as_a_token(text: str, jwt: bool) -> None:
    assert looks_like_jwt(text) is jwt


def test_groups_claim_shapes() -> None:
    assert _groups(["a", "b"]) == {"a", "b"}
    assert _groups("a") == {"a"}
    assert _groups(None) == frozenset()
    for garbage in ([1, 2], {"a": 1}, 7):
        with pytest.raises(TokenRejected, match="groups claim"):
            _groups(garbage)
