"""A subject's own lookup values, read from the warehouse for `report subject KEY`.

The ledger hashes a search on a `lookups` column with that column's value
(an SSN, a name), not with the subject's key, so a search for person 42 by
SSN is invisible to a report on key 42 unless the report knows 42's SSN.
With an upstream configured, the CLI reads the subject's current values of
its `lookups` columns through Oversight's own account and searches for them
as well. It needs SELECT on the subject table; without it the report says
so and goes on with the key alone. Values are never printed; a value that
changed since a search was made (a new phone number) finds only searches
for the current one.
"""

from __future__ import annotations

import asyncio

from proxy.rules.subjects import SubjectRule

TIMEOUT = 10.0
MAX_ROWS = 10  # a key is meant to be unique; more rows are not one subject


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table(qualified: str) -> str:
    schema, _, table = qualified.partition(".")
    return f"{_ident(schema)}.{_ident(table)}"


async def _read(dsn: str, rule: SubjectRule, key: str) -> list[tuple[str, str]]:
    import asyncpg  # the CLI's own dependency; the reports package does no network I/O

    conn = await asyncpg.connect(dsn, timeout=TIMEOUT)
    try:
        # The key compares as the column's own type (an index on it serves),
        # reached through text so any key type reads from the command line.
        keytype = await conn.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = $1::regclass AND attname = $2 AND NOT attisdropped",
            _table(rule.table),
            rule.key,
            timeout=TIMEOUT,
        )
        if keytype is None:
            raise LookupError(f"{rule.table} has no column {rule.key}")
        cols = ", ".join(f"{_ident(c)}::text" for c in rule.lookups)
        rows = await conn.fetch(
            f"SELECT {cols} FROM {_table(rule.table)}"
            f" WHERE {_ident(rule.key)} = $1::text::{keytype} LIMIT {MAX_ROWS}",
            key,
            timeout=TIMEOUT,
        )
    finally:
        await conn.close()
    out: list[tuple[str, str]] = []
    for row in rows:
        out += [(c, row[i]) for i, c in enumerate(rule.lookups) if row[i] is not None]
    return list(dict.fromkeys(out))


def lookup_values(dsn: str, rule: SubjectRule, key: str) -> list[tuple[str, str]]:
    """(column, value) of the subject's `lookups` columns; raises with a reason to show."""
    if not rule.lookups:
        return []
    return asyncio.run(_read(dsn, rule, key))
