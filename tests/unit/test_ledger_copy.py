"""The ledger's `seen` for COPY TO STDOUT: the statement names the columns, CopyData the values."""

from __future__ import annotations

import struct

import pytest
from ledger_helpers import CATALOG, KEY, PERSON, h
from playbook import Playbook, command_complete, finishes, query, ready_for_query

from proxy.actions import Running
from proxy.hooks import Admission
from proxy.ledger.copyout import CopyPlan, CopyReader, CopyTable, copy_plan
from proxy.ledger.rows import INT4, TEXT, Column
from proxy.ledger.tally import Tally
from proxy.watching import Watching
from proxy.wire import frame

PEOPLE = CopyTable(("id", "name"), ("person", None), (INT4, TEXT))
TABLES = {"public.people": PEOPLE}


def resolve(name: str) -> list[str]:
    return [f"public.{name}"] if f"public.{name}" in TABLES else []


@pytest.mark.parametrize(
    ("sql", "index", "options"),
    [
        ("COPY people TO STDOUT", 0, {}),
        ("copy public.people to stdout;", 0, {}),
        ('COPY "people" (name, id) TO STDOUT', 1, {}),
        ("COPY ONLY people TO STDOUT WITH (FORMAT csv, HEADER)", 0, {"csv": True, "header": True}),
        ("COPY people TO STDOUT (FORMAT csv, HEADER false)", 0, {"csv": True, "header": False}),
        ("COPY people TO STDOUT WITH CSV HEADER DELIMITER ';' NULL 'x'", 0,
         {"csv": True, "header": True, "delimiter": ";", "null": "x"}),
        ("COPY people TO STDOUT DELIMITER '|'", 0, {"delimiter": "|"}),
    ],
)  # fmt: skip
def test_copy_plan_reads_the_plain_forms(sql: str, index: int, options: dict[str, object]) -> None:
    plan = copy_plan(sql, TABLES, resolve, binary=False)
    assert plan is not None and plan.cols == (Column(index, "person", INT4, 0),)
    for k, v in options.items():
        assert getattr(plan, k) == v


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT id FROM people) TO STDOUT",  # a query: its columns have no origin here
        "COPY people (name) TO STDOUT",  # the key not copied
        "COPY people (nope) TO STDOUT",
        "COPY other TO STDOUT",
        "COPY people FROM STDIN",
        "COPY people TO STDOUT (ENCODING 'LATIN1')",  # written in another encoding
        "SELECT 1",
    ],
)
def test_copy_plan_leaves_everything_else_alone(sql: str) -> None:
    assert copy_plan(sql, TABLES, resolve, binary=False) is None


class _Owner:
    def __init__(self) -> None:
        self.subjects: Tally | None = None


def read(plan: CopyPlan, binary: bool, *rows: bytes) -> list[str]:
    owner = _Owner()
    reader = CopyReader(plan, binary, KEY, lambda b: b.decode(), owner)
    for r in rows:
        buf = b"xx" + r  # not at the buffer's start, as in the relay's read buffer
        reader.row(buf, 2, len(buf))
    return owner.subjects.field()["person"]["seen"] if owner.subjects else []


def test_text_rows_with_escapes_and_nulls() -> None:
    plan = copy_plan("COPY people (name, id) TO STDOUT", TABLES, resolve, binary=False)
    assert plan is not None
    assert read(plan, False, b"a\\tb\t42\n", b"c\t\\N\n", b"d\t7\n") == [h("42"), h("7")]
    pipe = copy_plan("COPY people (name, id) TO STDOUT DELIMITER '|'", TABLES, resolve, False)
    assert pipe is not None and read(pipe, False, b"a\\|b|5\n") == [h("5")]


def test_csv_rows_with_a_header_and_quotes() -> None:
    sql = "COPY people (name, id) TO STDOUT WITH (FORMAT csv, HEADER)"
    plan = copy_plan(sql, TABLES, resolve, binary=False)
    assert plan is not None
    rows = (b"name,id\n", b'"a, ""b""\nc",42\n', b"d,\n", b"e,9\n")
    assert read(plan, False, *rows) == [h("42"), h("9")]


def test_binary_rows_after_the_signature() -> None:
    plan = copy_plan("COPY people TO STDOUT (FORMAT binary)", TABLES, resolve, binary=True)
    assert plan is not None

    def tup(n: int | None, name: bytes) -> bytes:
        key = struct.pack("!i", -1) if n is None else struct.pack("!ii", 4, n)
        return struct.pack("!h", 2) + key + struct.pack("!i", len(name)) + name

    header = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
    rows = (header + tup(42, b"a"), tup(None, b"b"), tup(-1, b"c"), struct.pack("!h", -1))
    assert read(plan, True, *rows) == [h("42"), h("-1")]
    assert read(plan, True, header, tup(3, b"a")) == [h("3")]  # the header alone


def test_a_copy_through_the_session_is_read() -> None:
    def copy(sql: str, extended: bool) -> Admission:
        return Admission(statements=[{"kind": "copy"}])

    pb = Playbook(copy)
    subjects = [PERSON]
    pb.session.watching = Watching(KEY, lambda db: (subjects, CATALOG))
    pb.client(query("COPY people TO STDOUT"))
    out = frame(b"H", b"\x00" + struct.pack("!hhh", 2, 0, 0))
    data = b"".join(frame(b"d", b"%d\tp\n" % i) for i in range(1, 251))
    pb.server(out + data + frame(b"c") + command_complete("COPY 250") + ready_for_query())
    (stmt,) = [s for s in finishes(pb.actions) if isinstance(s, Running)]
    assert stmt.subjects is not None
    person = stmt.subjects.field()["person"]
    assert person["seen_count"] == 250 and h("42") in person["seen"]
