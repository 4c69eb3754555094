"""Reader for the SQL fixture files (sqlglot optimizer-fixture style, with metadata lines)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
