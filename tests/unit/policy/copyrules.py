"""The rule set and engine the COPY unit tests share."""

from __future__ import annotations

from pathlib import Path

from proxy.catalog import Catalog
from proxy.identity import SessionFacts
from proxy.policy.engine import PolicyEngine
from proxy.rules import load_rules

ALICE = SessionFacts("alice", "db")
RULES = """\
version: 1
defaults: {statements: [select, copy], unparsed: %s}
users: {alice: {attributes: {region: north}}}
rules:
  - id: people
    table: public.people
    row_filter: "region = :region"
    columns: {ssn: redact}
  - id: cases
    table: public.cases
    columns: {notes: deny, status: redact}
  - id: scratch
    table: sandbox.scratch
    statements: [copy]
  - id: secrets
    table: internal.*
    access: deny
"""
# The masking subquery of each governed table, as the rewrite writes it.
PEOPLE = (
    '(SELECT "id", "name", "region", \'****\' AS "ssn", "dob", "email" '
    'FROM "public"."people" WHERE (region = \'north\') OFFSET 0) AS people'
)


def make(tmp_path: Path, catalog: Catalog, unparsed: str = "block") -> PolicyEngine:
    p = tmp_path / "r.yaml"
    p.write_text(RULES % unparsed)
    return PolicyEngine(load_rules(p), catalog)
