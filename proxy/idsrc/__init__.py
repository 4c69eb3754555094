"""Identity sources outside the rule files: upstream roles, a directory, a token.

`IdentityResolver` asks every configured source for a user's groups and
attributes at session start, merges them (docs/identity.md, precedence) and
caches the answer for `identity_cache` seconds. A source that is down, slow
or answers garbage never lets a session in with fewer groups than it has:
with nothing fresh cached the login is refused with 28000
(`IdentityUnavailable`), and sessions already running are untouched.
"""

from __future__ import annotations

from proxy.idsrc.resolver import IdentityResolver, IdentityUnavailable, Source

__all__ = ["IdentityResolver", "IdentityUnavailable", "Source"]
