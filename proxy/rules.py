"""Rule files (DESIGN.md, "Rule files (version 1)"): models, loading, validation, matching.

A rule set is loaded from one YAML file or a directory of `*.yaml` files merged in
file-name order. Loading either yields a complete, validated `RuleSet` or raises
`RulesError` listing every problem found ("file: rule <id>: field: message"), so a
DBA fixes them all in one pass and a running proxy can keep its last good set.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from proxy.identity import SessionFacts

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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a decision is taken for: the user plus groups and attributes from `users:`."""

    user: str
    groups: frozenset[str] = frozenset()
    attributes: dict[str, str] = field(default_factory=dict)


class HourRange(_Model):
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


class Match(_Model):
    """Who a rule applies to; every key present must fit, absent keys fit everyone."""

    users: StrList | None = None
    groups: StrList | None = None
    client_cidrs: StrList | None = None
    applications: StrList | None = None
    hours: Annotated[list[HourRange] | None, BeforeValidator(_parse_hours)] = None

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
            if not any(ip in net for net in self._networks):
                return False
        if self.hours is not None:
            t = (now or facts.now or datetime.now().astimezone()).time()
            if not any(h.contains(t) for h in self.hours):
                return False
        return True


class SqlMask(_Model):
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


class Defaults(_Model):
    mode: Mode = "enforce"
    unknown_tables: Literal["allow", "block"] = "allow"
    unparsed: Literal["allow", "block"] = "block"
    statements: StrList = Field(default_factory=lambda: list(DEFAULT_STATEMENTS))

    def allows_kind(self, kind: str) -> bool:
        return "all" in self.statements or kind in self.statements


class UserEntry(_Model):
    groups: StrList = Field(default_factory=list)
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)


class TableRule(_Model):
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
        return self._pattern.fullmatch(qualified) is not None

    @property
    def params(self) -> set[str]:
        texts = [self.row_filter or ""]
        texts += [p.sql for p in self.columns.values() if isinstance(p, SqlMask)]
        return {m for t in texts for m in ATTR_PARAM.findall(_strip_strings(t))}


class FunctionRule(_Model):
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


class ExtractionRule(_Model):
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
    detect: Literal["copy_out", "unfiltered_scan", "paging_scan", "enumeration"] | None = None
    # Detector thresholds (all optional; the guard has its own defaults):
    min_rows: int | None = Field(default=None, ge=0)  # unfiltered_scan: table size worth flagging
    max_pages: int | None = Field(default=None, ge=1)  # paging_scan: pages of one query per window
    max_distinct: int | None = Field(default=None, ge=1)  # enumeration: distinct literals/window
    threshold: int | None = Field(default=None, ge=0)  # generic threshold for any detector
    mode: Mode | None = None

    @model_validator(mode="after")
    def _check_window(self) -> ExtractionRule:
        budgets = (self.max_rows, self.max_bytes, self.max_queries)
        if any(b is not None for b in budgets) and self.window is None:
            raise ValueError("max_rows/max_bytes/max_queries need a window (e.g. window: 1h)")
        return self


class TestExpect(_Model):
    decision: Literal["allow", "rewrite", "block"]
    rules: StrList | None = None
    sql_contains: StrList | None = None


class RuleTest(_Model):
    __test__ = False  # not a pytest class
    user: str
    sql: str
    expect: TestExpect
    application: str = ""
    client_ip: str = "127.0.0.1"
    search_path: StrList | None = None


class RuleFile(_Model):
    version: Literal[1]
    defaults: Defaults | None = None
    users: dict[str, UserEntry] = Field(default_factory=dict)
    rules: list[TableRule] = Field(default_factory=list)
    functions: list[FunctionRule] = Field(default_factory=list)
    extraction: list[ExtractionRule] = Field(default_factory=list)
    tests: list[RuleTest] = Field(default_factory=list)


class RulesError(Exception):
    """A rule set that does not validate; `.problems` has one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("invalid rule set:\n" + "\n".join(problems))
        self.problems = problems


def glob_regex(pattern: str) -> re.Pattern[str]:
    """`internal.*` -> regex; `*` does not cross the schema dot, `?` is one character."""
    out = []
    for ch in pattern:
        out.append("[^.]*" if ch == "*" else "[^.]" if ch == "?" else re.escape(ch))
    return re.compile("".join(out))


def _strip_strings(sql: str) -> str:
    return re.sub(r"'(?:[^']|'')*'", "''", sql)


@dataclass(slots=True)
class RuleSet:
    """The merged, validated rule files; immutable once built."""

    defaults: Defaults = field(default_factory=Defaults)
    users: dict[str, UserEntry] = field(default_factory=dict)
    rules: list[TableRule] = field(default_factory=list)
    functions: list[FunctionRule] = field(default_factory=list)
    extraction: list[ExtractionRule] = field(default_factory=list)
    tests: list[RuleTest] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # rule id -> file
    version: str = ""

    @property
    def uses_hours(self) -> bool:
        items: Iterable[TableRule | FunctionRule | ExtractionRule]
        items = [*self.rules, *self.functions, *self.extraction]
        return any(r.match is not None and r.match.hours is not None for r in items)

    @property
    def known_attributes(self) -> set[str]:
        return {"user"} | {a for u in self.users.values() for a in u.attributes}

    def principal(self, facts: SessionFacts) -> Principal:
        entry = self.users.get(facts.user)
        if entry is None:
            return Principal(facts.user)
        attrs = {k: _attr_text(v) for k, v in entry.attributes.items()}
        return Principal(facts.user, frozenset(entry.groups), attrs)

    def matching_extraction(self, facts: SessionFacts) -> list[ExtractionRule]:
        who = self.principal(facts)
        return [r for r in self.extraction if r.match is None or r.match.fits(who, facts)]

    def matching_rules(self, facts: SessionFacts) -> list[TableRule]:
        who = self.principal(facts)
        return [r for r in self.rules if r.match is None or r.match.fits(who, facts)]

    def matching_functions(self, facts: SessionFacts) -> list[FunctionRule]:
        who = self.principal(facts)
        return [r for r in self.functions if r.match is None or r.match.fits(who, facts)]


def _attr_text(v: str | int | float | bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted([*path.glob("*.yaml"), *path.glob("*.yml")], key=lambda p: p.name)
    return [path]


def _locate(raw: Any, loc: tuple[int | str, ...]) -> tuple[str, str]:
    """Map a pydantic error location to ('rule <id>: ', 'field.path')."""
    prefix = ""
    if len(loc) >= 2 and loc[0] in ("rules", "functions", "extraction", "tests"):
        section, idx = loc[0], loc[1]
        try:
            item = raw[section][idx]
            ident = item.get("id") if section != "tests" else None
        except (KeyError, IndexError, TypeError, AttributeError):
            item, ident = None, None
        prefix = f"rule {ident}: " if ident else f"{section}[{idx}]: "
        loc = loc[2:]
    elif len(loc) >= 2 and loc[0] == "users":
        prefix = f"user {loc[1]}: "
        loc = loc[2:]
    # Drop pydantic's union-branch labels ("literal['deny',...]", "SqlMask") from paths.
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p == "SqlMask"))]
    return prefix, ".".join(parts) or "(rule)"


_SECTIONS: dict[str, type[_Model]] = {
    "rules": TableRule,
    "functions": FunctionRule,
    "extraction": ExtractionRule,
    "tests": RuleTest,
}


def _errors(path: Path, raw: Any, e: ValidationError, base: tuple[int | str, ...]) -> list[str]:
    out: list[str] = []
    for err in e.errors():
        prefix, where = _locate(raw, base + tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        line = f"{path}: {prefix}{where}: {msg}"
        if line not in out:
            out.append(line)
    return out


def _raw_ids(raw: dict[str, Any]) -> list[str]:
    """Ids as written, valid or not, so duplicates are reported even next to other errors."""
    out = []
    for section in ("rules", "functions", "extraction"):
        items = raw.get(section)
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                out.append(item["id"])
    return out


def _validate_file(path: Path, problems: list[str]) -> tuple[RuleFile, list[str]] | None:
    """Validate one file item by item, so one bad rule does not hide the others' problems."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        problems.append(f"{path}: cannot read: {e.strerror or e}")
        return None
    except yaml.YAMLError as e:
        problems.append(f"{path}: not valid YAML: {e}")
        return None
    if not isinstance(raw, dict):
        problems.append(f"{path}: version: a rule file is a mapping with `version: 1`")
        return None
    top = {k: v for k, v in raw.items() if k not in _SECTIONS}
    parsed: dict[str, Any] = {}
    try:
        parsed.update(RuleFile.model_validate(top).__dict__)
    except ValidationError as e:
        problems.extend(_errors(path, raw, e, ()))
    for section, model in _SECTIONS.items():
        items = raw.get(section) or []
        if not isinstance(items, list):
            problems.append(f"{path}: {section}: must be a list")
            continue
        good = []
        for i, item in enumerate(items):
            try:
                good.append(model.model_validate(item))
            except ValidationError as e:
                problems.extend(_errors(path, raw, e, (section, i)))
        parsed[section] = good
    # The valid part goes on to the cross-file checks; the caller raises at the end anyway.
    return RuleFile.model_construct(**parsed), _raw_ids(raw)


def load_rules(path: str | Path) -> RuleSet:
    """Load, merge and validate a rule file or directory; raise RulesError with every problem."""
    root = Path(path)
    problems: list[str] = []
    if not root.exists():
        raise RulesError([f"{root}: no such file or directory"])
    files = _files(root)
    if not files:
        raise RulesError([f"{root}: no *.yaml rule files"])
    rs = RuleSet()
    defaults_from: str | None = None
    ids: dict[str, str] = {}
    file_rules: list[tuple[str, list[TableRule]]] = []
    digest = hashlib.sha256()
    for f in files:
        validated = _validate_file(f, problems)
        if validated is None:
            continue
        model, raw_ids = validated
        digest.update(orjson.dumps(model.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS))
        if model.defaults is not None:
            if defaults_from is not None:
                problems.append(f"{f}: defaults: already set in {defaults_from}")
            else:
                rs.defaults, defaults_from = model.defaults, str(f)
        for name, entry in model.users.items():
            if name in rs.users:
                problems.append(f"{f}: user {name}: defined twice")
            rs.users[name] = entry
        for rid in raw_ids:
            if rid in ids:
                problems.append(f"{f}: rule {rid}: id: duplicate (also in {ids[rid]})")
            ids.setdefault(rid, str(f))
            rs.sources.setdefault(rid, str(f))
        file_rules.append((str(f), model.rules))
        rs.rules += model.rules
        rs.functions += model.functions
        rs.extraction += model.extraction
        rs.tests += model.tests
    known = rs.known_attributes
    for fname, rules in file_rules:
        problems += static_problems(fname, rules, known)
    if problems:
        raise RulesError(problems)
    rs.version = digest.hexdigest()[:16]
    return rs


def static_problems(fname: str, rules: list[TableRule], known: set[str]) -> list[str]:
    """Problems found without a catalog: bad SQL in filters and masks, unknown :attributes."""
    from proxy.policy.sqlcheck import sql_problems  # late: keeps rules importable alone

    out: list[str] = []
    for r in rules:
        where = f"{fname}: rule {r.id}"
        for p in sorted(r.params - known):
            out.append(f"{where}: row_filter/columns: unknown attribute :{p}")
        if r.row_filter is not None:
            out += [f"{where}: row_filter: {m}" for m in sql_problems(r.row_filter, True)]
        for col, pol in r.columns.items():
            if isinstance(pol, SqlMask):
                out += [f"{where}: columns.{col}: {m}" for m in sql_problems(pol.sql, False)]
    return out
