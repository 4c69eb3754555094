"""`$n` placeholders are not literals: the audit keeps them, the detectors do not count them."""

from __future__ import annotations

from sqlglot.dialects.postgres import Postgres

from proxy.redact import redact


def _redact(sql: str) -> tuple[str, str, tuple[str, ...]]:
    return redact(sql, tuple(Postgres().tokenize(sql)))


def test_placeholders_survive_and_literals_go() -> None:
    text, _, literals = _redact("SELECT a FROM t WHERE id = $1 AND b = 5 AND c = $12")
    assert text == "SELECT a FROM t WHERE id = $1 AND b = ? AND c = $12"
    assert literals == ("5",)


def test_placeholder_number_changes_the_fingerprint_but_values_do_not() -> None:
    assert _redact("SELECT $1")[1] != _redact("SELECT $2")[1]
    assert _redact("SELECT 1")[1] == _redact("SELECT 2")[1]
