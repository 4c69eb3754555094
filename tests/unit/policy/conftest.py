"""Shared fixtures for the policy unit tests: the fixture rules, catalog and an engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.catalog import Catalog
from proxy.policy.engine import PolicyEngine
from proxy.rules import RuleSet, load_rules

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def rules() -> RuleSet:
    return load_rules(FIXTURES / "rules.yaml")


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.from_file(FIXTURES / "schema.yaml")


@pytest.fixture(scope="session")
def engine(rules: RuleSet, catalog: Catalog) -> PolicyEngine:
    return PolicyEngine(rules, catalog)
