"""Who is asking: the facts every policy and guard decision is taken for."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """The identity plus session facts of one client session (DESIGN.md, Identity).

    `user` is the startup user the client authenticated as. `groups` and
    `attributes` are what the identity sources outside the rule files gave
    at session start (upstream roles, a directory, a token; see
    proxy/idsrc); the rules layer merges them with the rule files' `users:`
    section. They are part of the facts, so every cached decision is keyed
    by them.
    """

    user: str
    database: str
    application: str = ""
    client_ip: str = "127.0.0.1"
    client_port: int = 0
    session_id: str = ""
    search_path: tuple[str, ...] = ("$user", "public")
    # False when the proxy cannot follow the server's search_path (proxy/gucs.py):
    # under a policy, statements are refused until the client sets it again.
    search_path_known: bool = True
    # The stated purpose (proxy/purpose.py), "" for none; False when the proxy cannot
    # follow it (a computed set_config): require_purpose then refuses.
    purpose: str = ""
    purpose_known: bool = True
    # Wall clock for `hours` matching; None means "now" at decision time.
    now: datetime | None = field(default=None, compare=False)
    groups: frozenset[str] = frozenset()
    attributes: tuple[tuple[str, str], ...] = ()  # sorted (name, value) pairs

    @property
    def client(self) -> str:
        return f"{self.client_ip}:{self.client_port}"


@dataclass(frozen=True, slots=True)
class Identity:
    """Groups and attributes from the identity sources, and which source gave each.

    `origin` maps a group (`group:NAME`) or attribute (`attr:NAME`) to the
    source that gave it, for `oversight identity` and the docs' precedence.
    """

    groups: frozenset[str] = frozenset()
    attributes: tuple[tuple[str, str], ...] = ()
    origin: tuple[tuple[str, str], ...] = ()

    def merged(self, other: Identity) -> Identity:
        """Groups are the union; an attribute already set here is kept (earlier wins)."""
        attrs = dict(self.attributes)
        origin = dict(self.origin)
        for k, v in other.attributes:
            if k not in attrs:
                attrs[k] = v
                origin.setdefault(f"attr:{k}", dict(other.origin).get(f"attr:{k}", ""))
        for g in other.groups - self.groups:
            origin[f"group:{g}"] = dict(other.origin).get(f"group:{g}", "")
        return Identity(
            self.groups | other.groups,
            tuple(sorted(attrs.items())),
            tuple(sorted(origin.items())),
        )


def from_source(source: str, groups: frozenset[str], attributes: dict[str, str]) -> Identity:
    """An Identity that one source gave, every item marked with that source."""
    origin = [(f"group:{g}", source) for g in groups]
    origin += [(f"attr:{k}", source) for k in attributes]
    return Identity(groups, tuple(sorted(attributes.items())), tuple(sorted(origin)))
