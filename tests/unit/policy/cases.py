"""Reader for the SQL fixture files (sqlglot optimizer-fixture style, with metadata lines)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from proxy.identity import SessionFacts
from proxy.policy.engine import PolicyEngine

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Case:
    title: str
    user: str
    sql: str
    decision: str
    rules: list[str]
    contains: list[str] = field(default_factory=list)
    lacks: list[str] = field(default_factory=list)
    reason: list[str] = field(default_factory=list)
    search_path: tuple[str, ...] | None = None
    extended: bool = False
    unknown: list[str] = field(default_factory=list)  # names StatementInfo.unknown must hold
    line: int = 0


def load_cases(name: str) -> list[Case]:
    cases: list[Case] = []
    meta: dict[str, list[str]] = {}
    sql: list[str] = []
    start = 0

    def flush() -> None:
        if not sql:
            meta.clear()
            return
        expect = meta["expect"][0].split()
        path = meta.get("search_path")
        cases.append(
            Case(
                title=meta["title"][0],
                user=meta["user"][0],
                sql="\n".join(sql),
                decision=expect[0],
                rules=expect[1:],
                contains=meta.get("contains", []),
                lacks=meta.get("lacks", []),
                reason=meta.get("reason", []),
                search_path=tuple(path[0].split(",")) if path else None,
                extended=meta.get("extended", ["false"])[0] == "true",
                unknown=meta.get("unknown", []),
                line=start,
            )
        )
        meta.clear()
        sql.clear()

    for n, raw in enumerate((FIXTURES / name).read_text().splitlines(), 1):
        line = raw.rstrip()
        if not line:
            flush()
        elif line.startswith("# ") and not sql:
            key, _, value = line[2:].partition(":")
            if value and key.strip().isidentifier():
                meta.setdefault(key.strip(), []).append(value.strip())
                start = start if sql else n
        else:
            sql.append(line)
    flush()
    return cases


def check_case(engine: PolicyEngine, case: Case) -> None:
    """Decide the case and compare decision, rules, rewrite fragments and reason."""
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
    for name in case.unknown:
        assert any(name in s.unknown for s in d.statements), detail
