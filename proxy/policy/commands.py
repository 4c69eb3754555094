"""`oversight check`, `oversight test` and `oversight explain`: the policy engine for DBAs.

Each function prints to stdout and returns the process exit code; proxy/cli.py
wires them into argparse. A catalog comes from `--schema FILE` or, failing
that, from the upstream DSN; without either, checks that need one are skipped
(and `explain`/`test` run against an empty catalog, which they say).
"""

from __future__ import annotations

import asyncio
import sys

from sqlglot import exp

from proxy.catalog import Catalog, load_catalog
from proxy.identity import SessionFacts
from proxy.policy.analyze import fold
from proxy.policy.engine import Decision, PolicyEngine
from proxy.policy.sqlcheck import parse_snippet
from proxy.rules import ATTR_PARAM, RulesError, RuleSet, SqlMask, load_rules
from proxy.rules import glob_regex as _glob


def _catalog(schema: str | None, upstream: str | None) -> tuple[Catalog | None, str]:
    if schema:
        return Catalog.from_file(schema), f"schema file {schema}"
    if upstream:
        return asyncio.run(load_catalog(upstream)), "upstream"
    return None, "no catalog"


def _load(rules: str) -> RuleSet | None:
    try:
        return load_rules(rules)
    except RulesError as e:
        for p in e.problems:
            print(p)
        print(f"{len(e.problems)} problem(s) in {rules}")
        return None


def catalog_problems(rs: RuleSet, catalog: Catalog) -> list[str]:
    """Problems only a catalog can reveal: globs that match nothing, columns that do not exist."""
    out: list[str] = []
    names = list(catalog.relations)
    for r in rs.rules:
        where = f"{rs.sources.get(r.id, '?')}: rule {r.id}"
        pattern = _glob(r.table)
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
            if not any(_glob(pat).fullmatch(k) for k in known):
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


def cmd_check(rules: str, schema: str | None, upstream: str | None) -> int:
    rs = _load(rules)
    if rs is None:
        return 1
    # A user lacking an attribute is not an error (their reads block, fail closed): warn.
    for w in attribute_problems(rs):
        print(f"warning: {w} (their reads of that table are blocked)")
    problems: list[str] = []
    try:
        catalog, source = _catalog(schema, upstream)
    except Exception as e:  # a bad schema file or unreachable upstream is itself a problem
        print(f"{schema or upstream}: cannot load catalog: {e}")
        return 1
    if catalog is not None:
        problems += catalog_problems(rs, catalog)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {rules}")
        return 1
    print(
        f"ok: {len(rs.rules)} table rules, {len(rs.functions)} function rules, "
        f"{len(rs.extraction)} extraction rules, {len(rs.users)} users, "
        f"{len(rs.tests)} tests ({source}); version {rs.version}"
    )
    return 0


def _engine(rules: RuleSet, schema: str | None, upstream: str | None) -> PolicyEngine:
    catalog, _ = _catalog(schema, upstream)
    if catalog is None:
        print("note: no catalog (--schema or upstream); masks on tables cannot be built")
        catalog = Catalog()
    return PolicyEngine(rules, catalog)


def _show(d: Decision) -> None:
    print(f"decision: {d.action}" + (f" (dry run; would {d.would})" if d.dry_run else ""))
    print(f"rules:    {', '.join(d.rules) or '-'}")
    if d.reason:
        print(f"reason:   {d.reason}")
    if d.error is not None:
        print(f"error:    {d.error.sqlstate} {d.error.message}")
    for i, s in enumerate(d.statements, 1):
        print(f"statement {i}: {s.kind}; tables: {', '.join(s.tables) or '-'}")
        if s.columns:
            print(f"  columns: {', '.join(s.columns)}")
        if s.functions:
            print(f"  functions: {', '.join(s.functions)}")
    if d.action == "rewrite":
        print("rewritten:")
        print(d.sql)


def cmd_explain(
    user: str,
    sql: str,
    rules: str,
    schema: str | None,
    upstream: str | None,
    application: str = "",
    client_ip: str = "127.0.0.1",
) -> int:
    rs = _load(rules)
    if rs is None:
        return 1
    engine = _engine(rs, schema, upstream)
    facts = SessionFacts(user, "", application=application, client_ip=client_ip)
    d = engine.decide(sql, facts)
    _show(d)
    return 0


def cmd_test(rules: str, schema: str | None, upstream: str | None) -> int:
    rs = _load(rules)
    if rs is None:
        return 1
    if not rs.tests:
        print(f"no tests: in {rules}")
        return 0
    engine = _engine(rs, schema, upstream)
    failed = 0
    for i, t in enumerate(rs.tests, 1):
        facts = SessionFacts(t.user, "", application=t.application, client_ip=t.client_ip)
        if t.search_path is not None:
            facts = SessionFacts(
                t.user,
                "",
                application=t.application,
                client_ip=t.client_ip,
                search_path=tuple(t.search_path),
            )
        d = engine.decide(t.sql, facts)
        action = d.would if d.dry_run and d.would else d.action
        problems = []
        if action != t.expect.decision:
            problems.append(f"expected {t.expect.decision}, got {action}")
        if t.expect.rules is not None and set(t.expect.rules) != set(d.rules):
            problems.append(f"expected rules {t.expect.rules}, got {list(d.rules)}")
        for frag in t.expect.sql_contains or []:
            if frag not in d.sql:
                problems.append(f"rewritten SQL lacks {frag!r}")
        label = f"test {i}: {t.user}: {t.sql}"
        if problems:
            failed += 1
            print(f"FAIL {label}")
            for p in problems:
                print(f"  {p}")
            print(f"  actual: {d.action} {list(d.rules)} {d.reason}")
        else:
            print(f"ok   {label}")
    print(f"{len(rs.tests) - failed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Tiny stand-alone entry (`python -m proxy.policy.commands check rules/`) for debugging."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 2 and args[0] == "check":
        return cmd_check(args[1], args[2] if len(args) > 2 else None, None)
    if len(args) >= 2 and args[0] == "test":
        return cmd_test(args[1], args[2] if len(args) > 2 else None, None)
    if len(args) >= 4 and args[0] == "explain":
        return cmd_explain(args[1], args[2], args[3], args[4] if len(args) > 4 else None, None)
    print("usage: check RULES [SCHEMA] | test RULES [SCHEMA] | explain USER SQL RULES [SCHEMA]")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
