"""Groups from upstream role membership (`groups_from_roles`).

Every role the user is a member of, directly or through other roles, becomes
a group, so a DBA's `GRANT analysts TO dave` is all it takes for dave's
`analysts` rules to apply. Read with Oversight's own account (the upstream
URI's user), which needs no privilege for `pg_roles`/`pg_auth_members`.
Membership counts whether or not the role inherits privileges (`NOINHERIT`,
PostgreSQL 16's `INHERIT FALSE`): the question is who the user is, not what
the upstream would let it do.
"""

from __future__ import annotations

from proxy.identity import Identity, from_source

SOURCE = "roles"

# UNION, not UNION ALL: it stops at roles already seen, so no membership graph
# can make it loop (PostgreSQL forbids cycles, but the query need not rely on it).
MEMBERSHIP_SQL = """
WITH RECURSIVE member_of(oid) AS (
    SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1
  UNION
    SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN member_of ON m.member = member_of.oid
)
SELECT r.rolname FROM member_of JOIN pg_catalog.pg_roles r ON r.oid = member_of.oid
WHERE r.rolname <> $1
"""


class RoleSource:
    """Looks a user's role memberships up on the upstream, one short connection each time.

    Lookups are rare (the resolver caches them), so a connection per lookup
    costs less than holding one idle on the upstream forever.
    """

    def __init__(self, dsn: str, password: str = "") -> None:
        self.dsn = dsn
        self._password = password

    async def lookup(self, user: str) -> Identity:
        import asyncpg  # late: only a proxy with this source configured needs the driver

        try:
            conn = await asyncpg.connect(self.dsn)
            try:
                rows = await conn.fetch(MEMBERSHIP_SQL, user)
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            # The message goes to the log: make sure the account's password never does.
            text = str(e).replace(self._password, "***") if self._password else str(e)
            raise ConnectionError(f"{type(e).__name__}: {text}") from None
        groups = frozenset(str(r[0]) for r in rows)
        return from_source(SOURCE, groups, {})
