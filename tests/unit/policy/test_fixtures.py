"""Every case in fixtures/*.sql: decision, rules, and fragments of the rewrite."""

from __future__ import annotations

import pytest

from proxy.identity import SessionFacts
from proxy.policy.engine import PolicyEngine

from .cases import Case, load_cases

CASES = load_cases("evasions.sql") + load_cases("gui.sql")


@pytest.mark.parametrize("case", CASES, ids=[f"{c.line}:{c.title}" for c in CASES])
def test_case(engine: PolicyEngine, case: Case) -> None:
    facts = SessionFacts(case.user, "db")
    if case.search_path is not None:
        facts = SessionFacts(case.user, "db", search_path=case.search_path)
    d = engine.decide(case.sql, facts, extended=case.extended)
    detail = f"{d.action} {d.rules} {d.reason!r}\n{d.sql}"
    assert d.action == case.decision, detail
    if case.decision == "block":
        assert d.error is not None and d.error.sqlstate == "42501"
        if case.rules:
            assert d.rules[0] == case.rules[0], detail
            assert set(case.rules) <= set(d.rules), detail
    else:
        assert d.error is None
        assert set(d.rules) == set(case.rules), detail
    if case.decision == "allow":
        assert d.sql == case.sql
    for fragment in case.contains:
        assert fragment in d.sql, detail
    for fragment in case.lacks:
        assert fragment not in d.sql, detail
    for fragment in case.reason:
        assert fragment in d.reason, detail
