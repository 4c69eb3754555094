"""What the ledger unit tests share: a catalog with OIDs, the subject `person`, its hash."""

from __future__ import annotations

from proxy.catalog import Catalog, Relation
from proxy.ledger.hashing import subject_hash
from proxy.rules.subjects import SubjectRule, Via

KEY = b"ledger-test-key"
PEOPLE, CASES, OTHER = 16400, 16410, 16420  # table OIDs
PERSON = SubjectRule(
    id="person",
    table="public.people",
    key="id",
    via=[Via(table="public.cases", column="person_id")],
)
CATALOG = Catalog(
    {
        "public.people": Relation(
            "public",
            "people",
            columns=("id", "name"),
            types=("int4", "text"),
            oid=PEOPLE,
            attnums=(1, 3),
        ),
        "public.cases": Relation(
            "public", "cases", columns=("id", "person_id"), oid=CASES, attnums=(1, 2)
        ),
        "public.other": Relation("public", "other", columns=("id",), oid=OTHER, attnums=(1,)),
    }
)


def h(value: str) -> str:
    return subject_hash(KEY, "person", value)
