"""Rule-set problems that need more than the rule files: a catalog, or the users' attributes.

Pure: (rule set, catalog) in, problem lines out. `oversight check`
(proxy/commands/rules.py) prints them; the loader's own checks, which need no
catalog, are in proxy/rules/load.py.
"""

from __future__ import annotations

from sqlglot import exp

from proxy.catalog import Catalog
from proxy.identity import SessionFacts
from proxy.policy.analyze import fold
from proxy.rules import ATTR_PARAM, RuleSet, SqlMask, glob_regex
from proxy.rules.sqlcheck import parse_snippet


def catalog_problems(rs: RuleSet, catalog: Catalog) -> list[str]:
    """Problems only a catalog can reveal: globs that match nothing, columns that do not exist."""
    out: list[str] = []
    names = list(catalog.relations)
    for r in rs.rules:
        where = f"{rs.sources.get(r.id, '?')}: rule {r.id}"
        pattern = glob_regex(r.table)
        matched = [n for n in names if pattern.fullmatch(n)]
        if not matched:
            out.append(f"{where}: table: {r.table} matches no relation in the catalog")
            continue
        for q in matched:
            cols = set(catalog.relations[q].columns)
            for c in r.columns:
                if cols and c not in cols:
                    out.append(f"{where}: columns.{c}: {q} has no column {c}")
            for c in _filter_columns(r.row_filter) - cols if cols else ():
                out.append(f"{where}: row_filter: {q} has no column {c}")
    for f in rs.functions:
        where = f"{rs.sources.get(f.id, '?')}: rule {f.id}"
        known = [f"{s}.{n}" for n, ss in catalog.functions.items() for s in ss]
        for pat in f.allow:
            if pat.startswith("pg_catalog."):
                continue
            if not any(glob_regex(pat).fullmatch(k) for k in known):
                out.append(f"{where}: allow: {pat} matches no function in the catalog")
    return out


def _filter_columns(row_filter: str | None) -> set[str]:
    """Bare column names a row filter uses outside its own subqueries."""
    if not row_filter:
        return set()
    tree = parse_snippet(row_filter)
    return {
        fold(c.this)
        for c in tree.find_all(exp.Column)
        if not c.table and c.find_ancestor(exp.Select) is None
    }


def attribute_problems(rs: RuleSet) -> list[str]:
    """Users whose rules bind an :attribute they do not have (decisions would block)."""
    out: list[str] = []
    for name, entry in rs.users.items():
        facts = SessionFacts(name, "")
        have = {"user", *entry.attributes}
        for r in rs.matching_rules(facts):
            texts = [r.row_filter or ""] + [
                p.sql for p in r.columns.values() if isinstance(p, SqlMask)
            ]
            for t in texts:
                for a in sorted(set(ATTR_PARAM.findall(t)) - have):
                    where = f"{rs.sources.get(r.id, '?')}: rule {r.id}"
                    out.append(f"{where}: row_filter: user {name} has no attribute :{a}")
    return out
