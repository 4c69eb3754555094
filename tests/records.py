"""Statement records for tests that feed the metrics as the recorder does."""

from __future__ import annotations

from proxy.metrics import Metrics
from proxy.statement import StatementRecord


def done(
    m: Metrics,
    user: str,
    decision: str,
    rules: list[str],
    rows: int,
    nbytes: int,
    duration_s: float,
    decision_s: float,
) -> None:
    """A finished statement, fed to the metrics as the recorder does: by its record."""
    rec = StatementRecord(
        ts="2026-01-01T00:00:00.000000Z",
        session="s1",
        user=user,
        groups=[],
        client="127.0.0.1:5000",
        application="test",
        database="db",
        sql="SELECT 1",
        fingerprint=None,
        kind="select",
        tables=[],
        columns=[],
        decision=decision,
        rules=rules,
        reason="",
        rewritten=None,
        rows=rows,
        bytes=nbytes,
        duration_ms=duration_s * 1000,
        error=None,
    )
    m.statement(rec, duration_s, decision_s)
