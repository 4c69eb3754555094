"""Loading rule files: validation, merging, problem reports (DESIGN.md, "Rule files").

A rule set is loaded from one YAML file or a directory of `*.yaml` files merged in
file-name order. Loading either yields a complete, validated `RuleSet` or raises
`RulesError` listing every problem found ("file: rule <id>: field: message"), so a
DBA fixes them all in one pass and a running proxy can keep its last good set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from proxy.rules.alertroutes import AlertRoute
from proxy.rules.filemodel import RuleFile
from proxy.rules.model import (
    ExtractionRule,
    FunctionRule,
    RuleModel,
    RuleTest,
    SqlMask,
    TableRule,
)
from proxy.rules.ruleset import RulesError, RuleSet
from proxy.rules.sqlcheck import sql_problems
from proxy.rules.subjects import CanaryRule, SubjectRule, subject_problems


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted([*path.glob("*.yaml"), *path.glob("*.yml")], key=lambda p: p.name)
    return [path]


def _locate(raw: Any, loc: tuple[int | str, ...]) -> tuple[str, str]:
    """Map a pydantic error location to ('rule <id>: ', 'field.path')."""
    prefix = ""
    if len(loc) >= 2 and loc[0] in ("rules", "functions", "extraction", "tests", "alerts"):
        section, idx = loc[0], loc[1]
        try:
            item = raw[section][idx]
            ident = item.get("id") if section != "tests" else None
        except (KeyError, IndexError, TypeError, AttributeError):
            item, ident = None, None
        noun = "alert" if section == "alerts" else "rule"
        prefix = f"{noun} {ident}: " if ident else f"{section}[{idx}]: "
        loc = loc[2:]
    elif len(loc) >= 2 and loc[0] == "users":
        prefix = f"user {loc[1]}: "
        loc = loc[2:]
    # Drop pydantic's union-branch labels ("literal['deny',...]", "SqlMask") from paths.
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p == "SqlMask"))]
    return prefix, ".".join(parts) or "(rule)"


_SECTIONS: dict[str, type[RuleModel | SubjectRule | CanaryRule]] = {
    "rules": TableRule,
    "functions": FunctionRule,
    "extraction": ExtractionRule,
    "tests": RuleTest,
    "alerts": AlertRoute,
    "subjects": SubjectRule,
    "canaries": CanaryRule,
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
    for section in ("rules", "functions", "extraction", "subjects", "canaries"):
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


def load_rules(path: str | Path, source_attributes: Iterable[str] = ()) -> RuleSet:
    """Load, merge and validate a rule file or directory; raise RulesError with every problem.

    `source_attributes` are the attributes the configured identity sources can
    give (an LDAP mapping): rules may use them as `:name` although no `users:`
    entry sets them; a user lacking one at decision time is blocked, as always.
    """
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
        for route in model.alerts:
            if any(a.id == route.id for a in rs.alerts):
                problems.append(f"{f}: alert {route.id}: id: duplicate alert destination")
            rs.alerts.append(route)
        rs.subjects += model.subjects
        rs.canaries += model.canaries
    claimed: dict[tuple[str, str], str] = {}
    for subj in rs.subjects:
        for pair in subj.key_columns() + [(subj.table, c) for c in subj.lookups]:
            if pair in claimed and claimed[pair] != subj.id:
                problems.append(
                    f"{rs.sources.get(subj.id, '?')}: subject {subj.id}: {'.'.join(pair)}:"
                    f" already a column of subject {claimed[pair]}"
                )
            claimed.setdefault(pair, subj.id)
    subject_ids = {s.id for s in rs.subjects}
    for subj in rs.subjects:
        problems += subject_problems(rs.sources.get(subj.id, "?"), [subj], [], subject_ids)
    for can in rs.canaries:
        problems += subject_problems(rs.sources.get(can.id, "?"), [], [can], subject_ids)
    for ext in rs.extraction:
        if ext.subject is not None and ext.subject not in subject_ids:
            problems.append(
                f"{rs.sources.get(ext.id, '?')}: rule {ext.id}: subject: no subject"
                f" {ext.subject!r} (known: {', '.join(sorted(subject_ids)) or 'none'})"
            )
    known = rs.known_attributes | set(source_attributes)
    for fname, rules in file_rules:
        problems += static_problems(fname, rules, known)
    if problems:
        raise RulesError(problems)
    rs.version = digest.hexdigest()[:16]
    return rs


def static_problems(fname: str, rules: list[TableRule], known: set[str]) -> list[str]:
    """Problems found without a catalog: bad SQL in filters and masks, unknown :attributes."""
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
