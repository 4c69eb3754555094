"""The audit files as one DuckDB relation: every record, every event, missing fields NULL.

DuckDB reads the JSON lines itself (`read_json`, newline-delimited, in
parallel), so a report never parses a record in Python. The schema is given
rather than sampled: records of different events carry different fields
(a `connect` has no `rows`, older records no `subjects`), and a fixed list
reads them all by name with what is missing as NULL, without the sampling
pass, and keeps a field that turned up in no file at all (a log without a
single canary) a NULL column rather than an error. Nested values whose shape
varies (`subjects`, `detectors`, a canary's fields) stay JSON and are taken
apart in SQL. A line that is not JSON (a torn tail, garbage) is skipped
here; the chain verification the user report runs names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Every field a report reads, with its type; others on the line are ignored.
COLUMNS: dict[str, str] = {
    "ts": "VARCHAR",
    "event": "VARCHAR",
    "session": "VARCHAR",
    "user": "VARCHAR",
    "client": "VARCHAR",
    "application": "VARCHAR",
    "database": "VARCHAR",
    "purpose": "VARCHAR",
    "sql": "VARCHAR",
    "fingerprint": "VARCHAR",
    "kind": "VARCHAR",
    "tables": "VARCHAR[]",
    "columns": "VARCHAR[]",
    "decision": "VARCHAR",
    "rules": "VARCHAR[]",
    "reason": "VARCHAR",
    "rows": "BIGINT",
    "bytes": "BIGINT",
    "error": "VARCHAR",
    "subjects": "JSON",
    "detectors": "JSON",
    # canary events (and any statement that carries one): shapes kept as JSON
    "canary": "JSON",
    "rule": "JSON",
    "subject": "JSON",
    "action": "JSON",
}

# One subject's entry of the `subjects` field (proxy/ledger/tally.py writes it), as a
# json_transform structure: lenient, so an entry with a field added by a later version,
# or a damaged one, reads as what it has (NULL for the rest) instead of failing the report.
SUBJECT_SHAPE = (
    '{"seen": ["VARCHAR"], "seen_count": "BIGINT", '
    '"looked_up": [{"column": "VARCHAR", "hash": "VARCHAR"}], "looked_up_count": "BIGINT"}'
)


def subject_entry(subjects: str, key: str) -> str:
    """SQL for the entry of subject id `key` (SQL text) in the JSON `subjects`, transformed.

    A JSON Pointer, escaped, reaches any id, also one with dots, slashes or quotes.
    """
    pointer = f"'/' || replace(replace({key}, '~', '~0'), '/', '~1')"
    return f"json_transform({subjects} -> ({pointer}), '{SUBJECT_SHAPE}')"


# A statement's SQL can be long; a record over this is skipped like a broken line.
MAX_RECORD = 64 * 2**20


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def audit_relation(files: Sequence[str]) -> str:
    """The FROM-clause text reading `files` (paths are quoted, never interpolated raw)."""
    names = "[" + ", ".join(_literal(f) for f in files) + "]"
    columns = "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in COLUMNS.items()) + "}"
    return (
        f"read_json({names}, format='newline_delimited', columns={columns}, "
        f"ignore_errors=true, maximum_object_size={MAX_RECORD}, filename='file')"
    )


class Source:
    """One in-memory DuckDB connection over a fixed list of audit files."""

    def __init__(self, files: Sequence[str], threads: int = 0) -> None:
        """`threads` > 0 caps DuckDB's threads (the proxy's own process must keep a core)."""
        import duckdb  # imported here: only reports need it, and it takes a moment to load

        self.files = list(files)
        self.relation = audit_relation(self.files)
        config: dict[str, str | bool | int | float | list[str]] = {}
        if threads > 0:
            config["threads"] = threads
        self.db = duckdb.connect(":memory:", config=config)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run `sql` (`{audit}` stands for the files) and return its rows as dicts."""
        cur = self.db.execute(sql.replace("{audit}", self.relation), params or {})
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.db.execute(sql.replace("{audit}", self.relation), params or {})
