"""Who is asking: the facts every policy and guard decision is taken for."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """The identity plus session facts of one client session (DESIGN.md, Identity).

    `user` is the startup user the client authenticated as. Groups and
    attributes are not here: they come from the rule files' `users:` section
    and are resolved by the rules layer.
    """

    user: str
    database: str
    application: str = ""
    client_ip: str = "127.0.0.1"
    client_port: int = 0
    session_id: str = ""
    search_path: tuple[str, ...] = ("$user", "public")
    # Wall clock for `hours` matching; None means "now" at decision time.
    now: datetime | None = field(default=None, compare=False)

    @property
    def client(self) -> str:
        return f"{self.client_ip}:{self.client_port}"
