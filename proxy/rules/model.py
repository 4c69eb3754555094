"""The rule-file models of version 1 (DESIGN.md, "Rule files (version 1)").

Pydantic models with `extra="forbid"`, so an unknown key is a problem, plus the
small parsers they use (sizes like "50MB", windows like "1h", hour ranges,
column policies) and identity matching (`Match.fits`). Loading, merging and
problem reporting live in proxy/rules/load.py; proxy/rules/__init__.py
re-exports both.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import datetime, time
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from proxy import purpose
from proxy.identity import SessionFacts

_SYSTEM_PREFIXES = ("pg_catalog.", "information_schema.")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """`internal.*` -> regex; `*` does not cross the schema dot, `?` is one character."""
    out = []
    for ch in pattern:
        out.append("[^.]*" if ch == "*" else "[^.]" if ch == "?" else re.escape(ch))
    return re.compile("".join(out))


def _strip_strings(sql: str) -> str:
    return re.sub(r"'(?:[^']|'')*'", "''", sql)


DEFAULT_STATEMENTS = (
    "select",
    "explain",
    "show",
    "set",
    "begin",
    "commit",
    "rollback",
    "declare",
    "fetch",
    "close",
)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_HOURS = re.compile(r"^\s*(\d{1,2})(?::(\d{2}))?\s*-\s*(\d{1,2})(?::(\d{2}))?\s*$")
ATTR_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


def parse_size(value: Any) -> int:
    """'50MB' -> 50_000_000, '1MiB' -> 1_048_576, 1234 -> 1234."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number or a string like '50MB'")
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"bad size {value!r}; use a number or e.g. '50MB', '1GiB'")
    unit = (m.group(2) or "").lower()
    base = 1024 if "i" in unit else 1000
    letter = unit[:1] if unit and unit[0] in "kmgt" else ""
    mult = base ** ("kmgt".index(letter) + 1) if letter else 1
    return int(float(m.group(1)) * mult)


def parse_duration(value: Any) -> float:
    """'1h' -> 3600.0, '15m' -> 900.0, 30 -> 30.0 (seconds)."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or e.g. '1h'")
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"bad duration {value!r}; use e.g. '30s', '15m', '1h', '1d'")
    return float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "s").lower()]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
StrList = Annotated[list[str], BeforeValidator(_as_list)]
Mode = Literal["enforce", "dry_run"]


class RuleModel(BaseModel):
    """Base of every rule-file model: unknown keys are problems, values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a decision is taken for: the user plus groups and attributes from `users:`."""

    user: str
    groups: frozenset[str] = frozenset()
    attributes: dict[str, str] = field(default_factory=dict)


class HourRange(RuleModel):
    start: time
    end: time

    def contains(self, t: time) -> bool:
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end  # wraps midnight, e.g. 22-06


def _parse_hours(value: Any) -> Any:
    out = []
    for item in _as_list(value) or []:
        if isinstance(item, dict | HourRange):
            out.append(item)
            continue
        m = _HOURS.match(str(item))
        if not m:
            raise ValueError(f"bad hours {item!r}; use e.g. '08:00-18:00' or '22-6'")
        h1, m1, h2, m2 = (int(g) if g else 0 for g in m.groups())
        if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59:
            raise ValueError(f"bad hours {item!r}")
        start = time(h1 % 24, m1)
        end = time(h2 % 24, m2)
        out.append({"start": start, "end": end})
    return out


class Match(RuleModel):
    """Who a rule applies to; every key present must fit, absent keys fit everyone."""

    users: StrList | None = None
    groups: StrList | None = None
    client_cidrs: StrList | None = None
    applications: StrList | None = None
    hours: Annotated[list[HourRange] | None, BeforeValidator(_parse_hours)] = None
    purposes: StrList | None = None  # globs on the stated purpose (proxy/purpose.py)

    @model_validator(mode="after")
    def _check_cidrs(self) -> Match:
        for cidr in self.client_cidrs or []:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as e:
                raise ValueError(f"client_cidrs: bad network {cidr!r}") from e
        return self

    @cached_property
    def _networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(c, strict=False) for c in self.client_cidrs or []]

    def fits(self, who: Principal, facts: SessionFacts, now: datetime | None = None) -> bool:
        if self.users is not None and who.user not in self.users:
            return False
        if self.groups is not None and not who.groups.intersection(self.groups):
            return False
        if self.applications is not None and facts.application not in self.applications:
            return False
        if self.client_cidrs is not None:
            try:
                ip = ipaddress.ip_address(facts.client_ip)
            except ValueError:
                return False  # unix socket or garbage: an address rule cannot fit
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped  # ::ffff:10.1.2.3 from a dual-stack listener
            if not any(ip in net for net in self._networks):
                return False
        if self.purposes is not None and not (
            facts.purpose_known and purpose.fits(facts.purpose, self.purposes)
        ):
            return False
        if self.hours is not None:
            t = (now or facts.now or datetime.now().astimezone()).time()
            if not any(h.contains(t) for h in self.hours):
                return False
        return True


class SqlMask(RuleModel):
    sql: str


MASK_KINDS = ("deny", "null", "redact", "hash", "partial")


def _column_policy(value: Any) -> Any:
    if value is None:
        return "null"  # YAML `ssn: null` parses as None; it means the null mask
    if isinstance(value, SqlMask) or value in MASK_KINDS:
        return value
    if isinstance(value, dict) and set(value) == {"sql"} and isinstance(value["sql"], str):
        return SqlMask(sql=value["sql"])
    raise ValueError(
        f"bad column policy {value!r}; use one of {', '.join(MASK_KINDS)} or {{sql: ...}}"
    )


ColumnPolicy = Annotated[
    Literal["deny", "null", "redact", "hash", "partial"] | SqlMask,
    BeforeValidator(_column_policy),
]


class RequirePurpose(RuleModel):
    """defaults.require_purpose: who must state a purpose, and what it must look like."""

    match: Match | None = None
    pattern: str = "."  # a regular expression searched in the purpose

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"bad pattern {v!r}: {e}") from e
        return v

    def satisfied(self, text: str) -> bool:
        return bool(text) and re.search(self.pattern, text) is not None


class Defaults(RuleModel):
    mode: Mode = "enforce"
    require_purpose: RequirePurpose | None = None
    unknown_tables: Literal["allow", "block"] = "allow"
    unparsed: Literal["allow", "block"] = "block"
    statements: StrList = Field(default_factory=lambda: list(DEFAULT_STATEMENTS))

    def allows_kind(self, kind: str) -> bool:
        return "all" in self.statements or kind in self.statements


class UserEntry(RuleModel):
    groups: StrList = Field(default_factory=list)
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)


class TableRule(RuleModel):
    """A row filter, column policies or access decision for the tables `table` matches."""

    id: str
    description: str = ""
    match: Match | None = None
    table: str
    access: Literal["allow", "deny"] = "allow"
    row_filter: str | None = None
    columns: dict[str, ColumnPolicy] = Field(default_factory=dict)
    # Statement kinds besides reads this rule permits on its tables (insert, update, ...).
    statements: StrList = Field(default_factory=list)
    mode: Mode | None = None

    @field_validator("table")
    @classmethod
    def _check_table(cls, v: str) -> str:
        if v.count(".") != 1 or not all(v.split(".")):
            raise ValueError(f"{v!r} must be schema.table (globs allowed)")
        return v

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        return glob_regex(self.table)

    def names(self, qualified: str) -> bool:
        # A schema glob (`*.*`, `p*.x`) never reaches the system catalogs: GUI clients
        # need them, and their value-holding parts are policed as side channels.
        # Naming the schema explicitly (`pg_catalog.pg_proc`) still works.
        schema = self.table.split(".", 1)[0]
        if ("*" in schema or "?" in schema) and qualified.startswith(_SYSTEM_PREFIXES):
            return False
        return self._pattern.fullmatch(qualified) is not None

    @property
    def params(self) -> set[str]:
        texts = [self.row_filter or ""]
        texts += [p.sql for p in self.columns.values() if isinstance(p, SqlMask)]
        return {m for t in texts for m in ATTR_PARAM.findall(_strip_strings(t))}


class FunctionRule(RuleModel):
    id: str
    description: str = ""
    match: Match | None = None
    allow: StrList
    mode: Mode | None = None

    @cached_property
    def _patterns(self) -> list[re.Pattern[str]]:
        return [glob_regex(p) for p in self.allow]

    def allows(self, qualified: str) -> bool:
        return any(p.fullmatch(qualified) for p in self._patterns)


# Before the statement (its text and the user's history) ...
STATEMENT_DETECTORS = ("copy_out", "unfiltered_scan", "paging_scan", "enumeration")
# ... and after it, from its subject-ledger tally (proxy/guard/ledger.py).
LEDGER_DETECTORS = ("coverage", "restricted_lookup")
DETECTORS = (*STATEMENT_DETECTORS, *LEDGER_DETECTORS)
DetectorName = Literal[
    "copy_out", "unfiltered_scan", "paging_scan", "enumeration", "coverage", "restricted_lookup"
]


def _key_list(v: Any) -> Any:
    """Restricted subject keys as text, the way the ledger hashes them (`42`, not 42)."""
    if v is None:
        return v
    if not isinstance(v, list):
        raise ValueError("keys: a list of subject keys")
    out = []
    for k in v:
        if isinstance(k, bool) or not isinstance(k, str | int):
            raise ValueError(f"keys: {k!r} is not a subject key (a string or an integer)")
        out.append(str(k))
    return out


class ExtractionRule(RuleModel):
    """Limits and detectors the extraction guard enforces on result streams."""

    id: str
    description: str = ""
    match: Match | None = None
    max_rows_per_query: int | None = Field(default=None, ge=0)
    max_bytes_per_query: Size | None = Field(default=None, ge=0)
    window: Duration | None = Field(default=None, gt=0)
    max_rows: int | None = Field(default=None, ge=0)
    max_bytes: Size | None = Field(default=None, ge=0)
    max_queries: int | None = Field(default=None, ge=0)
    action: Literal["log", "throttle", "block"] = "block"
    detect: DetectorName | None = None
    # Detector thresholds (all optional; the guard has its own defaults):
    min_rows: int | None = Field(default=None, ge=0)  # unfiltered_scan: table size worth flagging
    max_pages: int | None = Field(default=None, ge=1)  # paging_scan: pages of one query per window
    max_distinct: int | None = Field(default=None, ge=1)  # enumeration: distinct literals/window
    threshold: int | None = Field(default=None, ge=0)  # generic threshold for any detector
    # The subject-ledger detectors (coverage, restricted_lookup; docs/rules.md):
    subject: str | None = None  # a `subjects:` id
    share: float | None = Field(default=None, gt=0, le=1)  # coverage: fraction of the table
    of: int | None = Field(default=None, ge=1)  # coverage: the table's size, instead of reltuples
    keys: Annotated[list[str] | None, BeforeValidator(_key_list)] = None  # restricted subjects
    how: list[Literal["looked_up", "seen"]] | None = None  # restricted_lookup: which tally lists
    mode: Mode | None = None

    @model_validator(mode="after")
    def _check_window(self) -> ExtractionRule:
        budgets = (self.max_rows, self.max_bytes, self.max_queries)
        if any(b is not None for b in budgets) and self.window is None:
            raise ValueError("max_rows/max_bytes/max_queries need a window (e.g. window: 1h)")
        return self

    @model_validator(mode="after")
    def _check_ledger(self) -> ExtractionRule:
        """The ledger detectors' keys belong to them alone, and each needs its own."""
        d = self.detect
        if d not in LEDGER_DETECTORS:
            for name in ("subject", "share", "of", "keys", "how"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only for detect: coverage or restricted_lookup")
            return self
        if self.subject is None:
            raise ValueError(f"detect: {d} needs subject: <a subjects: id>")
        caps = (self.max_rows_per_query, self.max_bytes_per_query)
        budgets = (self.max_rows, self.max_bytes, self.max_queries)
        if any(v is not None for v in (*caps, *budgets)):
            raise ValueError(f"detect: {d} is an entry of its own: put caps and budgets apart")
        if d == "coverage":
            if self.share is None:
                raise ValueError("detect: coverage needs share: (e.g. 0.2 of the subject table)")
            if self.keys is not None or self.how is not None:
                raise ValueError("keys/how: only for detect: restricted_lookup")
        else:
            if not self.keys:
                raise ValueError("detect: restricted_lookup needs keys: [the restricted subjects]")
            if self.share is not None or self.of is not None:
                raise ValueError("share/of: only for detect: coverage")
            if self.action == "throttle":
                raise ValueError("detect: restricted_lookup: action is log or block")
            if self.how is not None and not self.how:
                raise ValueError("how: name looked_up, seen or both")
        return self


class TestExpect(RuleModel):
    decision: Literal["allow", "rewrite", "block"]
    rules: StrList | None = None
    sql_contains: StrList | None = None


class RuleTest(RuleModel):
    __test__ = False  # not a pytest class
    user: str
    sql: str
    expect: TestExpect
    application: str = ""
    client_ip: str = "127.0.0.1"
    search_path: StrList | None = None
