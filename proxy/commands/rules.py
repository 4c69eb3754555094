"""`oversight check`, `oversight test` and `oversight explain`: the policy engine for DBAs.

The I/O side of rule checking (reading files, loading a catalog, printing);
the checks themselves are pure and live in proxy/rules and proxy/policy.
Each function prints to stdout and returns the process exit code; proxy/cli.py
wires them into argparse. A catalog comes from `--schema FILE` or, failing
that, from the upstream DSN; without either, checks that need one are skipped
(and `explain`/`test` run against an empty catalog, which they say).
"""

from __future__ import annotations

import asyncio

from proxy.catalog import Catalog, load_catalog
from proxy.identity import Identity, SessionFacts
from proxy.policy.catalogcheck import attribute_problems, catalog_problems
from proxy.policy.engine import Decision, PolicyEngine
from proxy.rules import RulesError, RuleSet, load_rules
from proxy.watching import subject_problems


def _catalog(schema: str | None, upstream: str | None) -> tuple[Catalog | None, str]:
    if schema:
        return Catalog.from_file(schema), f"schema file {schema}"
    if upstream:
        return asyncio.run(load_catalog(upstream)), "upstream"
    return None, "no catalog"


def _load(rules: str, attributes: set[str] | None = None) -> RuleSet | None:
    try:
        return load_rules(rules, attributes or ())
    except RulesError as e:
        for p in e.problems:
            print(p)
        print(f"{len(e.problems)} problem(s) in {rules}")
        return None


def cmd_check(
    rules: str, schema: str | None, upstream: str | None, attributes: set[str] | None = None
) -> int:
    rs = _load(rules, attributes)
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
        problems += subject_problems(rs, catalog)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {rules}")
        return 1
    print(
        f"ok: {len(rs.rules)} table rules, {len(rs.functions)} function rules, "
        f"{len(rs.extraction)} extraction rules, {len(rs.subjects)} subjects, "
        f"{len(rs.canaries)} canaries, {len(rs.users)} users, "
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
    identity: Identity | None = None,
    attributes: set[str] | None = None,
) -> int:
    rs = _load(rules, attributes)
    if rs is None:
        return 1
    engine = _engine(rs, schema, upstream)
    ident = identity or Identity()
    facts = SessionFacts(
        user,
        "",
        application=application,
        client_ip=client_ip,
        groups=ident.groups,
        attributes=ident.attributes,
    )
    if ident.groups or ident.attributes:
        from proxy.commands.identity import describe

        print("\n".join(describe(rs, user, ident)))
    d = engine.decide(sql, facts)
    _show(d)
    return 0


def cmd_test(
    rules: str, schema: str | None, upstream: str | None, attributes: set[str] | None = None
) -> int:
    rs = _load(rules, attributes)
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
