"""Property tests: spelling a governed name differently never escapes its rule."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.identity import SessionFacts
from proxy.policy.engine import PolicyEngine

ALICE = SessionFacts("alice", "db")
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def spelled(draw: st.DrawFn, name: str) -> str:
    """`name` as PostgreSQL reads it: any case unquoted, exact lower case quoted, or U&."""
    style = draw(st.sampled_from(["unquoted", "quoted", "unicode"]))
    if style == "unquoted":
        flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
        return "".join(c.upper() if f else c for c, f in zip(name, flips, strict=True))
    if style == "quoted":
        return f'"{name}"'
    escaped = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    body = "".join(f"\\{ord(c):04x}" if e else c for c, e in zip(name, escaped, strict=True))
    return f'U&"{body}"'


@st.composite
def table_ref(draw: st.DrawFn, name: str) -> str:
    t = draw(spelled(name))
    if draw(st.booleans()):
        t = f"{draw(spelled('public'))}.{t}"
    return t


SEP = st.sampled_from([" ", "  ", "\n", "\t", " /* x */ ", " -- c\n"])


@FAST
@given(table=table_ref("cases"), col=spelled("notes"), sep=SEP, alias=st.booleans())
def test_denied_column_any_spelling(
    engine: PolicyEngine, table: str, col: str, sep: str, alias: bool
) -> None:
    ref = f"{table} AS c" if alias else table
    qcol = f"c.{col}" if alias else col
    sql = f"SELECT{sep}{qcol}{sep}FROM{sep}{ref}"
    d = engine.decide(sql, ALICE)
    assert d.action == "block" and d.rules[0] == "no-case-notes", (sql, d.reason)


@FAST
@given(table=table_ref("people"), sep=SEP)
def test_governed_table_any_spelling(engine: PolicyEngine, table: str, sep: str) -> None:
    sql = f"SELECT{sep}count(*){sep}FROM{sep}{table}"
    d = engine.decide(sql, ALICE)
    assert d.action == "rewrite", (sql, d.reason)
    assert "WHERE (region = 'north') OFFSET 0" in d.sql


@FAST
@given(table=table_ref("secrets"))
def test_denied_schema_any_spelling(engine: PolicyEngine, table: str) -> None:
    schema_spelled = table.split(".")[-1]
    d = engine.decide(f"SELECT 1 FROM internal.{schema_spelled}", ALICE)
    assert d.action == "block" and d.rules[0] == "internal-schema"


@FAST
@given(text=st.text(max_size=40))
def test_string_literals_never_split(engine: PolicyEngine, text: str) -> None:
    text = text.replace("\x00", "")
    sql = "SELECT '" + text.replace("'", "''") + "'"
    d = engine.decide(sql, ALICE)
    assert d.action == "allow" and len(d.statements) == 1, sql


@FAST
@given(text=st.text(max_size=60))
def test_arbitrary_text_never_raises(engine: PolicyEngine, text: str) -> None:
    d = engine.decide(text, ALICE)
    assert d.action in ("allow", "rewrite", "block")
    if d.action == "block":
        assert d.error is not None and d.error.sqlstate == "42501"


@FAST
@given(
    body=st.lists(
        st.sampled_from(["notes", "cases", "SELECT", "FROM", ";", "'", '"', "$$", "--", "/*"]),
        max_size=12,
    )
)
def test_token_soup_never_leaks_notes(engine: PolicyEngine, body: list[str]) -> None:
    """Whatever the soup, a statement that reads notes from cases is never let through as is."""
    sql = " ".join(body)
    d = engine.decide(sql, ALICE)
    for s in d.statements:
        if "public.cases.notes" in s.columns:
            assert d.action == "block", sql
