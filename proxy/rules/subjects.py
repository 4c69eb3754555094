"""The `subjects:` and `canaries:` sections (DESIGN.md, "Rule files": data subjects).

A subject is whose records a table holds: its `key` identifies one person,
`lookups` are columns whose search values name one too, and `via` lists other
tables that carry the key. The ledger (proxy/ledger/) hashes what each
statement received or searched for under these names; canaries are decoy keys
nobody has a reason to touch.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
# Rule files are read as bare identifiers: lower case, as PostgreSQL folds them.
_QUALIFIED = re.compile(r"[a-z_][a-z0-9_$]*\.[a-z_][a-z0-9_$]*")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _table(v: str) -> str:
    if not _QUALIFIED.fullmatch(v):
        raise ValueError(f"{v!r}: write the table as schema.table, lower case, no globs")
    return v


def _column(v: str) -> str:
    if not _IDENT.fullmatch(v) or v != v.lower():
        raise ValueError(f"{v!r}: a column name, lower case")
    return v


Table = Annotated[str, AfterValidator(_table)]
Column = Annotated[str, AfterValidator(_column)]


class Via(_Model):
    """Another table holding the subject's key, in `column`."""

    table: Table
    column: Column


class SubjectRule(_Model):
    """Whose records `table` holds: `key` names one subject, `lookups` search for one."""

    id: str
    description: str = ""
    table: Table
    key: Column
    lookups: list[Column] = Field(default_factory=list)
    via: list[Via] = Field(default_factory=list)

    @field_validator("lookups")
    @classmethod
    def _check_lookups(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a lookup column is listed twice")
        return v

    def key_columns(self) -> list[tuple[str, str]]:
        """(table, column) pairs whose values are this subject's key."""
        return [(self.table, self.key), *((v.table, v.column) for v in self.via)]


def _key_text(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise ValueError(f"{v!r}: a canary key is a string or an integer")
    return str(v)


class CanaryRule(_Model):
    """Decoy subject keys: a statement that receives or searches for one is reported."""

    id: str
    description: str = ""
    subject: str
    keys: list[str] = Field(min_length=1)
    action: Literal["alert", "block"] = "alert"

    @field_validator("keys", mode="before")
    @classmethod
    def _check_keys(cls, v: Any) -> Any:
        if not isinstance(v, list):
            raise ValueError("keys: a list of subject keys")
        return [_key_text(k) for k in v]


def subject_problems(
    fname: str, subjects: list[SubjectRule], canaries: list[CanaryRule], known: set[str]
) -> list[str]:
    """Cross-section problems: a (table, column) claimed twice, a canary of no subject.

    `known` holds the subject ids of every file, for canaries in another file.
    """
    out: list[str] = []
    for s in subjects:
        if s.key in s.lookups:
            out.append(f"{fname}: subject {s.id}: lookups: {s.key} is the key already")
        tables = [s.table, *(v.table for v in s.via)]
        if len(set(tables)) != len(tables):
            out.append(f"{fname}: subject {s.id}: via: a table is named twice")
    for c in canaries:
        if c.subject not in known:
            out.append(
                f"{fname}: canary {c.id}: subject: no subject {c.subject!r}"
                f" (known: {', '.join(sorted(known)) or 'none'})"
            )
    return out
