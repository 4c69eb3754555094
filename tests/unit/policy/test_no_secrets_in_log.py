"""Statement text, and so any secret in it, never reaches the process log."""

from __future__ import annotations

import logging

import pytest

from proxy.identity import SessionFacts
from proxy.policy.engine import PolicyEngine

SECRET = "hunter2-secret"
STATEMENTS = [
    f"CREATE ROLE bob LOGIN PASSWORD '{SECRET}'",
    f"ALTER ROLE bob PASSWORD E'{SECRET}'",
    f"CREATE USER MAPPING FOR bob SERVER s OPTIONS (password '{SECRET}')",
    f"CREATE DOMAIN d AS text CHECK (VALUE <> '{SECRET}')",
    f"SELECT '{SECRET}' FROM",  # a parse error
]


@pytest.mark.parametrize("sql", STATEMENTS)
def test_statement_text_stays_out_of_the_log(
    engine: PolicyEngine, caplog: pytest.LogCaptureFixture, sql: str
) -> None:
    caplog.set_level(logging.DEBUG)
    for user in ("alice", "nobody-governed"):
        engine.decide(sql, SessionFacts(user, "db"))
        engine.decide(sql, SessionFacts(user, "db"), extended=True)
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert SECRET not in caplog.text
