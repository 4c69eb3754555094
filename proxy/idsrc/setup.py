"""Building the configured identity sources from the settings."""

from __future__ import annotations

from proxy.idsrc.ldap import SOURCE as LDAP
from proxy.idsrc.ldap import LdapSource
from proxy.idsrc.resolver import IdentityResolver, Source
from proxy.idsrc.roles import SOURCE as ROLES
from proxy.idsrc.roles import RoleSource
from proxy.settings import Settings


def identity_resolver(settings: Settings) -> IdentityResolver | None:
    """The resolver for the sources the settings turn on; None when there are none."""
    sources: list[Source] = []
    if settings.groups_from_roles:
        up = settings.upstream_target
        sources.append(Source(ROLES, RoleSource(up.uri, up.password).lookup))
    if settings.ldap_url:
        sources.append(Source(LDAP, LdapSource(settings).lookup))
    if not sources:
        return None
    return IdentityResolver(sources, ttl=settings.identity_cache, timeout=settings.identity_timeout)
