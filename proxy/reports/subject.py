"""`report subject`: every user who received or searched for one subject.

It is the compliance officer's "accounting of disclosures".

The audit log holds no plaintext key or search value, only the ledger's keyed
hashes (proxy/ledger/hashing.py). So the search value is hashed here, under
the current ledger key and every older one still accepted (a rotated key
leaves older records hashed under the old one), and the records are matched
on those hashes:

- a subject KEY matches `seen` hashes, and `looked_up` entries on the key
  column or a `via` column (a key searched for hashes like a key read);
- `--by-lookup COLUMN=VALUE` matches `looked_up` entries on that `lookups`
  column, whose hashes name the column too;
- a KEY search may carry the subject's own lookup values (`also`: its SSN,
  its name, read from the subject table by the CLI), so a search for the
  person by SSN is found under the person's key.

DuckDB does the matching: a cheap text test on the raw `subjects` JSON picks
the few candidate records out of millions, and only those are taken apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from proxy.ledger.hashing import subject_hash
from proxy.reports.errors import ReportError
from proxy.reports.source import Source, subject_entry
from proxy.rules import RuleSet

# The fields of one line of the report, in order (DESIGN.md, "Audit log").
FIELDS = (
    "ts",
    "user",
    "session",
    "purpose",
    "how",
    "column",
    "fingerprint",
    "sql",
    "decision",
    "rows",
)


@dataclass(frozen=True, slots=True)
class SubjectSearch:
    """What to look for: one subject's key, or one search value on one of its columns."""

    subject: str
    value: str
    column: str  # "" for a key (how the ledger hashes keys), else the lookups column
    columns: tuple[str, ...]  # `looked_up` columns that count as a search for it
    # A key search: the subject's values in its `lookups` columns, (column, value).
    also: tuple[tuple[str, str], ...] = ()

    @property
    def by_key(self) -> bool:
        return self.column == ""

    def hashes(self, keys: Sequence[bytes]) -> list[str]:
        """The value's hash under each accepted ledger key, current first."""
        return list(
            dict.fromkeys(subject_hash(k, self.subject, self.value, self.column) for k in keys)
        )

    def pairs(self, keys: Sequence[bytes]) -> list[str]:
        """`column|hash` of every `looked_up` entry that is a search for the subject."""
        own = [f"{c}|{h}" for c in self.columns for h in self.hashes(keys)]
        also = [f"{c}|{subject_hash(k, self.subject, v, c)}" for c, v in self.also for k in keys]
        return list(dict.fromkeys(own + also))

    def describe(self) -> str:
        """The search without its value (which is never printed or logged)."""
        return f"{self.subject} by key" if self.by_key else f"{self.subject} by {self.column}"


def search_for(rules: RuleSet, subject: str, key: str | None, lookup: str | None) -> SubjectSearch:
    """Check SUBJECT and COLUMN against the rule files; exactly one of key and lookup."""
    rule = rules.subject(subject)
    if rule is None:
        known = ", ".join(sorted(s.id for s in rules.subjects)) or "none in the rule files"
        raise ReportError(f"no subject {subject!r} (known: {known})")
    key_columns = tuple(dict.fromkeys(c for _, c in rule.key_columns()))
    if (key is None) == (lookup is None):
        raise ReportError("give the subject's KEY or --by-lookup COLUMN=VALUE (one of them)")
    if key is not None:
        return SubjectSearch(subject, key, "", key_columns)
    assert lookup is not None
    column, sep, value = lookup.partition("=")
    column = column.strip()
    if not sep or not column:
        raise ReportError("--by-lookup: write COLUMN=VALUE, e.g. ssn=123-45-6789")
    if column in key_columns:  # a search on the key column is a key search
        return SubjectSearch(subject, value, "", key_columns)
    if column not in rule.lookups:
        allowed = ", ".join([*rule.lookups, *key_columns])
        raise ReportError(
            f"--by-lookup: subject {subject!r} has no lookup column {column!r} (its columns: "
            f"{allowed})"
        )
    return SubjectSearch(subject, value, column, (column,))


def _candidates(n: int) -> str:
    # One substring test per hash on the raw JSON text: far cheaper than parsing it.
    return " OR ".join(f"contains(subjects, $h{i})" for i in range(n))


def subject_report(
    source: Source, search: SubjectSearch, keys: Sequence[bytes], since: str | None
) -> list[dict[str, Any]]:
    """Every statement that received or searched for the subject, oldest first.

    A statement that did both gives two lines (`seen` and `looked_up`); one
    that searched on two key columns (`id` and `person_id`) one per column.
    `since` is an audit timestamp (RFC 3339, UTC, as the log writes it).
    """
    hashes = search.hashes(keys)
    pairs = search.pairs(keys)
    wanted = list(dict.fromkeys(hashes + [p.split("|", 1)[1] for p in pairs]))
    params: dict[str, Any] = {f"h{i}": h for i, h in enumerate(wanted)}
    params |= {
        "subject": search.subject,
        "hashes": hashes,
        "pairs": pairs,
        "by_key": search.by_key,
        "since": since,
    }
    sql = f"""
    WITH cand AS (
        SELECT ts, "user", session, purpose, fingerprint, sql, decision, rows,
               {subject_entry("subjects", "$subject")} AS s
        FROM {{audit}}
        WHERE event = 'statement' AND subjects IS NOT NULL
          AND ($since IS NULL OR ts >= $since)
          AND ({_candidates(len(wanted))})
    ), lookups AS (
        SELECT *, unnest(s.looked_up) AS e FROM cand
    )
    SELECT ts, "user", session, purpose, 'seen' AS how, NULL AS "column",
           fingerprint, sql, decision, rows
    FROM cand WHERE $by_key AND list_has_any(s.seen, $hashes)
    UNION ALL
    SELECT ts, "user", session, purpose, 'looked_up' AS how, e."column",
           fingerprint, sql, decision, rows
    FROM lookups WHERE list_contains($pairs, e."column" || '|' || e.hash)
    ORDER BY ts, session, how DESC, "column"
    """
    return source.rows(sql, params)
