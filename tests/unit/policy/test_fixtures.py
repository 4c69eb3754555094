"""Every case in fixtures/*.sql: decision, rules, and fragments of the rewrite."""

from __future__ import annotations

import pytest

from proxy.policy.engine import PolicyEngine

from .cases import Case, check_case, load_cases

CASES = load_cases("evasions.sql") + load_cases("gui.sql")


@pytest.mark.parametrize("case", CASES, ids=[f"{c.line}:{c.title}" for c in CASES])
def test_case(engine: PolicyEngine, case: Case) -> None:
    check_case(engine, case)
