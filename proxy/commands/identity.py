"""`oversight identity USER`: the groups and attributes a session of USER gets, and from where.

Asks the same sources a session start asks (without the cache), so what it
prints is what the next login would get; a token's groups depend on each
login's token and are only mentioned.
"""

from __future__ import annotations

import asyncio
import sys

from proxy.identity import Identity, SessionFacts, from_source
from proxy.idsrc import IdentityUnavailable
from proxy.idsrc.setup import identity_resolver
from proxy.rules import RuleSet
from proxy.settings import Settings

RULES_SOURCE = "rules"


def resolve(settings: Settings, user: str) -> Identity:
    """The configured sources' answer for `user`; IdentityUnavailable when one cannot give it."""
    settings = settings.model_copy(update={"identity_cache": 0})
    resolver = identity_resolver(settings) if settings.upstream else None
    if resolver is None:
        return Identity()
    return asyncio.run(resolver.resolve(user))


def describe(
    rules: RuleSet, user: str, ident: Identity, token_claim: str | None = None
) -> list[str]:
    """Lines naming every group and attribute with the source that gave it."""
    entry = rules.users.get(user)
    local = from_source(
        RULES_SOURCE,
        frozenset(entry.groups) if entry else frozenset(),
        {k: str(v) for k, v in entry.attributes.items()} if entry else {},
    )
    who = rules.principal(SessionFacts(user, "", groups=ident.groups, attributes=ident.attributes))
    origin = dict(ident.origin)
    origin.update(dict(local.origin))  # the rule files' attributes win (docs/identity.md)
    out = [f"user {user}"]
    out.append("groups:" if who.groups else "groups: none")
    for g in sorted(who.groups):
        sources = [RULES_SOURCE] if entry and g in entry.groups else []
        if g in ident.groups:
            sources.append(dict(ident.origin).get(f"group:{g}", "?"))
        out.append(f"  {g}  ({', '.join(sources)})")
    out.append("attributes:" if who.attributes else "attributes: none")
    for k, v in sorted(who.attributes.items()):
        out.append(f"  {k} = {v}  ({origin.get(f'attr:{k}', '?')})")
    if token_claim is not None:
        out.append(f"  (+ the groups in each login's token, claim {token_claim!r})")
    return out


def cmd_identity(settings: Settings, rules: RuleSet, user: str) -> int:
    try:
        ident = resolve(settings, user)
    except IdentityUnavailable as e:
        print(f"{e.message}" + (f" ({e.detail})" if e.detail else ""), file=sys.stderr)
        return 1
    claim = settings.oidc_groups_claim if settings.oidc_issuer else None
    print("\n".join(describe(rules, user, ident, claim)))
    return 0
