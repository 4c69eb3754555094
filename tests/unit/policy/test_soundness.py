"""The bypass corpus (fixtures/soundness.sql): every class of issue #12, one case or more each.

Run against fixtures/soundness_rules.yaml: the fixture rules with `statements: [all]`,
so that no case passes only because its statement kind happens to be refused, and a
user (ops) no rule applies to.
"""

from __future__ import annotations

import pytest

from proxy.catalog import Catalog
from proxy.identity import SessionFacts
from proxy.policy.engine import PolicyEngine
from proxy.rules import load_rules

from .cases import FIXTURES, Case, check_case, load_cases

CASES = load_cases("soundness.sql")


@pytest.fixture(scope="module")
def sound_engine(catalog: Catalog) -> PolicyEngine:
    return PolicyEngine(load_rules(FIXTURES / "soundness_rules.yaml"), catalog)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.line}:{c.title}" for c in CASES])
def test_case(sound_engine: PolicyEngine, case: Case) -> None:
    check_case(sound_engine, case)


def test_insert_check_reads_values_the_shape_cache_would_share(catalog: Catalog) -> None:
    """Two refused rows of one shape must not make the shape cache refuse a third row
    that passes the filter: VALUES rows are values the decision depends on."""
    engine = PolicyEngine(load_rules(FIXTURES / "soundness_rules.yaml"), catalog)
    erin = SessionFacts("erin", "db")
    sql = "INSERT INTO people (id, name, region) VALUES ({}, 'x', '{}')"
    seen = [engine.decide(sql.format(i, r), erin).action for i, r in enumerate(REGIONS)]
    assert seen == ["block", "block", "allow", "allow", "block"]


REGIONS = ["south", "east", "north", "north", "south"]
