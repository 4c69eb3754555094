"""The ledger's `seen`: result rows read for subjects' keys, sans IO.

RowDescription and DataRow bytes go into a Session whose watch says which
(table OID, attnum) hold a person's key; the statement's tally must hold
exactly the hashes of the keys the client received.
"""

from __future__ import annotations

import logging
import struct
import uuid
from collections.abc import Sequence

import pytest
from ledger_helpers import CASES, CATALOG, KEY, OTHER, PEOPLE, PERSON, h
from playbook import (
    BIND_COMPLETE,
    PARSE_COMPLETE,
    SYNC,
    Playbook,
    command_complete,
    describe,
    error,
    execute,
    finishes,
    parameter_description,
    parse,
    query,
    ready_for_query,
)

from proxy.actions import Running, ToClient
from proxy.catalog import Catalog, Relation
from proxy.hooks import Admission, StreamLimits
from proxy.ledger.origins import view_origins
from proxy.ledger.rows import (
    INT4,
    INT8,
    NAME,
    TEXT,
    UUID,
    Column,
    RowReader,
    bind_result_formats,
    described,
    undecodable,
    with_formats,
)
from proxy.ledger.tally import CAP, Tally
from proxy.rules import RuleSet
from proxy.rules.subjects import SubjectRule, Via
from proxy.watching import Watching, subject_problems, watch_map
from proxy.wire import frame

# ---------------------------------------------------------------- wire helpers


def field(name: str, table: int = 0, attnum: int = 0, type_oid: int = TEXT, fmt: int = 0) -> bytes:
    return name.encode() + b"\0" + struct.pack("!IhIhih", table, attnum, type_oid, -1, -1, fmt)


def row_description(*fields: bytes) -> bytes:
    return frame(b"T", struct.pack("!h", len(fields)) + b"".join(fields))


def data_row(*values: bytes | None) -> bytes:
    body = struct.pack("!h", len(values))
    for v in values:
        body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
    return frame(b"D", body)


def bind(portal: str = "", statement: str = "", formats: Sequence[int] = ()) -> bytes:
    body = portal.encode() + b"\0" + statement.encode() + b"\0"
    body += struct.pack("!h", 1) + struct.pack("!h", 0)  # one parameter format: text
    body += struct.pack("!h", 1) + struct.pack("!i", 2) + b"42"  # one parameter: '42'
    body += struct.pack("!h", len(formats)) + b"".join(struct.pack("!h", f) for f in formats)
    return frame(b"B", body)


def int4(n: int) -> bytes:
    return struct.pack("!i", n)


PEOPLE_T = row_description(field("name", PEOPLE, 3), field("id", PEOPLE, 1, INT4), field("x", 0, 0))


def people_rows(ids: range, *, binary: bool = False) -> bytes:
    return b"".join(data_row(b"n%d" % i, int4(i) if binary else str(i).encode(), b"x") for i in ids)


def playbook(policy: object = None, subjects: list[SubjectRule] | None = None) -> Playbook:
    pb = Playbook(policy) if policy is not None else Playbook()  # type: ignore[arg-type]
    rules = [PERSON] if subjects is None else subjects
    pb.session.watching = Watching(KEY, lambda db: (rules, CATALOG))
    return pb


def finished(pb: Playbook) -> list[Running]:
    return finishes(pb.actions)


def seen(stmt: Running) -> tuple[set[str], int]:
    assert stmt.subjects is not None, "nothing seen"
    person = stmt.subjects.field()["person"]
    return set(person["seen"]), person["seen_count"]


# ---------------------------------------------------------------- simple query


def test_a_select_of_the_key_counts_every_row_received() -> None:
    pb = playbook()
    pb.client(query("SELECT name, id, 'x' FROM people"))
    pb.server(PEOPLE_T + people_rows(range(1, 301)) + command_complete("SELECT 300"))
    pb.server(ready_for_query())
    (stmt,) = finished(pb)
    hashes, count = seen(stmt)
    assert count == 300 and h("42") in hashes and len(hashes) == 300
    assert h("301") not in hashes


def test_rows_split_across_reads_and_nulls() -> None:
    pb = playbook()
    pb.client(query("SELECT name, id, 'x' FROM people"))
    data = PEOPLE_T + data_row(b"a", None, b"x") + people_rows(range(5, 8))
    for i in range(0, len(data), 7):  # frames cut anywhere
        pb.server(data[i : i + 7])
    pb.server(command_complete("SELECT 4") + ready_for_query())
    assert seen(finished(pb)[0]) == ({h("5"), h("6"), h("7")}, 3)


def test_unwatched_statements_get_no_reader_and_no_subjects() -> None:
    pb = playbook()
    pb.client(query("SELECT id FROM other; SELECT name FROM people"))
    other = row_description(field("id", OTHER, 1, INT4))
    names = row_description(field("name", PEOPLE, 3))
    pb.server(other + data_row(b"42"))
    current = pb.session.current()
    assert current is not None and current.reader is None  # its rows cost nothing more
    pb.server(command_complete("SELECT 1"))
    pb.server(names + data_row(b"42") + command_complete("SELECT 1") + ready_for_query())
    assert [s.subjects for s in finished(pb)] == [None, None]


def test_no_subjects_configured_means_nothing_is_read() -> None:
    pb = playbook(subjects=[])
    pb.client(query("SELECT name, id, 'x' FROM people"))
    pb.server(PEOPLE_T + people_rows(range(3)) + command_complete("SELECT 3") + ready_for_query())
    assert finished(pb)[0].subjects is None


def test_a_join_through_the_via_column_counts_both() -> None:
    pb = playbook()
    pb.client(query("SELECT p.id, c.person_id FROM people p JOIN cases c ON ..."))
    t = row_description(field("id", PEOPLE, 1), field("person_id", CASES, 2, INT8))
    pb.server(t + data_row(b"1", b"1") + data_row(b"2", b"3") + command_complete("SELECT 2"))
    pb.server(ready_for_query())
    assert seen(finished(pb)[0]) == ({h("1"), h("2"), h("3")}, 3)


def test_a_cut_off_statement_counts_only_rows_the_client_received() -> None:
    def capped(sql: str, extended: bool) -> Admission:
        return Admission(limits=StreamLimits(max_rows=5, rule="cap"), statements=[{}])

    pb = playbook(capped)
    pb.client(query("SELECT name, id, 'x' FROM people"))
    pb.server(PEOPLE_T + people_rows(range(1, 11)))
    pb.cancel_done()
    pb.server(command_complete("SELECT 10") + ready_for_query())
    (stmt,) = finished(pb)
    assert stmt.cutoff and seen(stmt) == ({h(str(i)) for i in range(1, 6)}, 5)


def test_fetch_from_a_sql_cursor_counts_each_page() -> None:
    pb = playbook()
    for page in (range(1, 4), range(4, 6)):
        pb.client(query("FETCH 3 FROM c"))
        pb.server(PEOPLE_T + people_rows(page) + command_complete(f"FETCH {len(page)}"))
        pb.server(ready_for_query(b"T"))
    first, second = finished(pb)
    assert seen(first)[1] == 3 and seen(second) == ({h("4"), h("5")}, 2)


# ---------------------------------------------------------------- extended protocol


def test_a_prepared_statement_run_without_describe_is_read_every_time() -> None:
    """asyncpg and JDBC: Parse + Describe S once, then Bind/Execute alone, binary results."""
    pb = playbook()
    pb.client(parse("q", "SELECT name, id, 'x' FROM people WHERE id < $1") + describe(b"S", "q"))
    pb.client(SYNC)
    pb.server(PARSE_COMPLETE + parameter_description(23) + PEOPLE_T + ready_for_query())
    for n in range(3):
        pb.client(bind("", "q", formats=[1]) + execute() + SYNC)
        pb.server(BIND_COMPLETE + people_rows(range(40, 43 + n), binary=True))
        pb.server(command_complete(f"SELECT {3 + n}") + ready_for_query())
    runs = finished(pb)
    assert [seen(r)[1] for r in runs] == [3, 4, 5]
    assert h("42") in seen(runs[0])[0]


def test_a_pipelined_describe_and_runs_per_column_formats() -> None:
    """Parse, Describe S, Bind with a format per column, Execute, Sync: all at once."""
    pb = playbook()
    pb.client(
        parse("q", "SELECT name, id, 'x' FROM people")
        + describe(b"S", "q")
        + bind("", "q", formats=[0, 1, 0])
        + execute()
        + SYNC
    )
    pb.server(PARSE_COMPLETE + parameter_description() + PEOPLE_T + BIND_COMPLETE)
    pb.server(people_rows(range(7, 9), binary=True) + command_complete("SELECT 2"))
    pb.server(ready_for_query())
    assert seen(finished(pb)[0]) == ({h("7"), h("8")}, 2)


def test_a_described_portal_uses_its_own_formats() -> None:
    """libpq (psycopg): Bind, Describe P, Execute; the RowDescription has the real formats."""
    pb = playbook()
    t = row_description(field("id", PEOPLE, 1, INT4, fmt=1))
    pb.client(parse("", "SELECT id FROM people") + bind(formats=[1]) + describe(b"P") + execute())
    pb.client(SYNC)
    pb.server(PARSE_COMPLETE + BIND_COMPLETE + t + data_row(int4(42)) + data_row(int4(-3)))
    pb.server(command_complete("SELECT 2") + ready_for_query())
    assert seen(finished(pb)[0]) == ({h("42"), h("-3")}, 2)


def test_a_portal_rebound_to_an_unwatched_statement_is_not_read() -> None:
    pb = playbook()
    t = row_description(field("id", PEOPLE, 1))
    pb.client(parse("", "SELECT id FROM people") + bind() + describe(b"P") + execute() + SYNC)
    pb.server(PARSE_COMPLETE + BIND_COMPLETE + t + data_row(b"1"))
    pb.server(command_complete("SELECT 1") + ready_for_query())
    other = row_description(field("id", OTHER, 1))
    pb.client(parse("", "SELECT id FROM other") + bind() + describe(b"P") + execute() + SYNC)
    pb.server(PARSE_COMPLETE + BIND_COMPLETE + other + data_row(b"1"))
    pb.server(command_complete("SELECT 1") + ready_for_query())
    first, second = finished(pb)
    assert seen(first)[1] == 1 and second.subjects is None


def test_a_reload_applies_to_statements_prepared_before_it() -> None:
    rules: list[SubjectRule] = []
    pb = Playbook()
    pb.session.watching = Watching(KEY, lambda db: (rules, CATALOG))
    pb.client(parse("q", "SELECT name, id, 'x' FROM people") + describe(b"S", "q") + SYNC)
    pb.server(PARSE_COMPLETE + parameter_description() + PEOPLE_T + ready_for_query())
    rules = [PERSON]  # the rules now have the subject
    pb.client(bind("", "q") + execute() + SYNC)
    pb.server(BIND_COMPLETE + people_rows(range(2)) + command_complete("SELECT 2"))
    pb.server(ready_for_query())
    assert seen(finished(pb)[0])[1] == 2


def test_a_run_nobody_described_is_described_by_the_proxy_unseen_by_the_client() -> None:
    pb = playbook()
    sent = pb.client(parse("", "SELECT name, id, 'x' FROM people") + bind() + execute() + SYNC)
    assert sent[-1] == "server P B D E S"  # a Describe of the portal, before its Execute
    got = pb.server(PARSE_COMPLETE + BIND_COMPLETE + PEOPLE_T + people_rows(range(1, 4)))
    got += pb.server(command_complete("SELECT 3") + ready_for_query())
    assert got[0] == "client 1 2 D*3" and got[2] == "client C Z:I"  # no T: not the client's
    assert seen(finished(pb)[0])[1] == 3


def test_a_statement_run_again_undescribed_is_described_once() -> None:
    pb = playbook()
    pb.client(parse("q", "SELECT name, id, 'x' FROM people") + SYNC)
    pb.server(PARSE_COMPLETE + ready_for_query())
    assert pb.client(bind("", "q") + execute() + SYNC)[-1] == "server B D E S"
    pb.server(BIND_COMPLETE + PEOPLE_T + people_rows(range(2)) + command_complete("SELECT 2"))
    pb.server(ready_for_query())
    assert pb.client(bind("", "q", formats=[1]) + execute() + SYNC)[-1] == "server B E S"
    pb.server(BIND_COMPLETE + people_rows(range(5, 8), binary=True) + command_complete("SELECT 3"))
    pb.server(ready_for_query())
    assert seen(finished(pb)[1]) == ({h("5"), h("6"), h("7")}, 3)


def test_the_proxys_own_describe_fails_as_the_execute_would() -> None:
    pb = playbook()
    pb.client(bind("p", "gone") + execute("p") + SYNC, auto=True)
    pb.server(error("26000", "prepared statement does not exist") + ready_for_query())
    assert [s.error for s in finished(pb)][-1] is not None
    assert b"26000" in b"".join(a.data for a in pb.actions if isinstance(a, ToClient))


def test_no_describe_is_added_when_nothing_is_watched_or_one_is_coming() -> None:
    pb = playbook(subjects=[])
    assert pb.client(parse("", "SELECT 1") + bind() + execute() + SYNC)[-1] == "server P B E S"
    pb = playbook()
    sent = pb.client(parse("q", "SELECT 1") + describe(b"S", "q") + bind("", "q") + execute())
    assert sent[-1] == "server P D B E"


# ---------------------------------------------------------------- rows.py


def test_described_picks_watched_columns_and_survives_garbage() -> None:
    body = PEOPLE_T[5:]
    assert described(body, {(PEOPLE, 1): "person"}) == (Column(1, "person", INT4, 0),)
    assert described(body[:-3], {(PEOPLE, 1): "person"}) == ()
    assert described(b"", {}) == ()


def test_bind_result_formats_and_how_they_apply() -> None:
    assert bind_result_formats(bind("p", "s", formats=[1, 0])[5:]) == (1, 0)
    assert bind_result_formats(bind()[5:]) == ()
    assert bind_result_formats(b"\0") == ()
    cols = (Column(0, "person", INT4), Column(2, "person", TEXT))
    assert [c.fmt for c in with_formats(cols, ())] == [0, 0]
    assert [c.fmt for c in with_formats(cols, (1,))] == [1, 1]
    assert [c.fmt for c in with_formats(cols, (1, 0, 0))] == [1, 0]


class _Owner:
    def __init__(self) -> None:
        self.subjects: Tally | None = None


@pytest.mark.parametrize(
    ("col", "raw", "text"),
    [
        (Column(0, "person", INT4, 1), int4(-42), "-42"),
        (Column(0, "person", INT8, 1), struct.pack("!q", 2**40), str(2**40)),
        (Column(0, "person", 21, 1), struct.pack("!h", 7), "7"),
        (Column(0, "person", 26, 1), struct.pack("!I", 2**32 - 1), str(2**32 - 1)),
        (Column(0, "person", NAME, 1), "zoë".encode(), "zoë"),
        (Column(0, "person", UUID, 1), uuid.UUID(int=5).bytes, str(uuid.UUID(int=5))),
        (Column(0, "person", 1700, 0), b"12.50", "12.50"),  # numeric in text: as printed
    ],
)
def test_values_hash_as_postgresql_prints_them(col: Column, raw: bytes, text: str) -> None:
    owner = _Owner()
    RowReader((col,), KEY, lambda b: b.decode(), owner).row(data_row(raw)[5:], 0)
    assert owner.subjects is not None
    assert owner.subjects.field()["person"]["seen"] == [h(text)]


def test_binary_values_of_other_types_are_not_read() -> None:
    numeric = Column(0, "person", 1700, 1)
    assert undecodable((numeric, Column(1, "person", INT4, 1))) == [numeric]
    assert not RowReader((numeric,), KEY, bytes.decode, _Owner())


def test_past_the_cap_distinct_values_are_counted_without_listing() -> None:
    owner = _Owner()
    reader = RowReader((Column(0, "person", TEXT),), KEY, bytes.decode, owner)
    for i in [*range(CAP + 50), *range(10)]:  # repeats of listed values do not count
        reader.row(data_row(str(i).encode())[5:], 0)
    assert owner.subjects is not None
    person = owner.subjects.field()["person"]
    assert person["seen_count"] == CAP + 50 and len(person["seen"]) == CAP


def test_a_malformed_row_is_read_as_far_as_it_goes() -> None:
    owner = _Owner()
    reader = RowReader((Column(3, "person", TEXT),), KEY, bytes.decode, owner)
    reader.row(data_row(b"1")[5:], 0)  # fewer fields than described
    reader.row(b"\x00\x05\x00\x00", 0)  # truncated
    assert owner.subjects is None


# ---------------------------------------------------------------- the map and the check


def test_watch_map_includes_partitions_and_says_what_is_missing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cat = Catalog(
        {
            **CATALOG.relations,
            "public.people_2024": Relation(
                "public",
                "people_2024",
                columns=("id", "name"),
                oid=16500,
                attnums=(2, 1),
                parents=("public.people",),
            ),
        }
    )
    ghost = SubjectRule(id="ghost", table="public.ghosts", key="id")
    columns, missing = watch_map([PERSON, ghost], cat)
    assert columns == {(PEOPLE, 1): "person", (16500, 2): "person", (CASES, 2): "person"}
    assert missing == ["subject ghost: key: public.ghosts is not in the catalog"]
    subjects = [PERSON, ghost]
    watching = Watching(KEY, lambda db: (subjects, cat))
    with caplog.at_level(logging.WARNING, "oversight.ledger"):
        first = watching.get("db")
        assert watching.get("db") is first  # cached while rules and catalog are the same
    assert [r.getMessage() for r in caplog.records].count(
        "ledger: database 'db': subject ghost: key: public.ghosts is not in the catalog; "
        "not watched"
    ) == 1


def test_a_catalog_without_oids_watches_nothing() -> None:
    cat = Catalog({"public.people": Relation("public", "people", columns=("id",))})
    assert Watching(KEY, lambda db: ([PERSON], cat)).get("db") is None


def test_check_reports_subject_columns_missing_from_the_catalog() -> None:
    bad = SubjectRule(
        id="person", table="public.people", key="pid", via=[Via(table="public.x", column="y")]
    )
    rs = RuleSet(subjects=[bad], sources={"person": "50-subjects.yaml"})
    assert subject_problems(rs, CATALOG) == [
        "50-subjects.yaml: subject person: key: public.people has no column pid",
        "50-subjects.yaml: subject person: via[0]: public.x is not in the catalog",
    ]


def test_oids_stay_out_of_the_schema_file_but_change_the_version() -> None:
    a = Catalog(
        {"public.people": Relation("public", "people", columns=("id",), oid=1, attnums=(1,))}
    )
    b = Catalog(
        {"public.people": Relation("public", "people", columns=("id",), oid=2, attnums=(1,))}
    )
    plain = Catalog({"public.people": Relation("public", "people", columns=("id",))})
    assert a.to_dict() == b.to_dict() == plain.to_dict()
    assert len({a.version, b.version, plain.version}) == 3
    assert Catalog.from_dict(a.to_dict()).version == Catalog.from_dict(plain.to_dict()).version


# A view's stored query as pg_rewrite.ev_action holds it, abridged: a sublink's own
# query (a target list at another depth), a quoted and escaped name, a computed
# column, a junk (ORDER BY) column.
TREE = (
    "({QUERY :commandType 1 :rtable ({RANGETBLENTRY :eref {ALIAS :aliasname pp :colnames "
    '("x" "id" "name")} :relid 16400}) :jointree {FROMEXPR :fromlist ({RANGETBLREF :rtindex 1}) '
    ":quals {SUBLINK :subselect {QUERY :targetList ({TARGETENTRY :expr {VAR :varno 1} :resno 1 "
    ":resname id :ressortgroupref 0 :resorigtbl 16400 :resorigcol 2 :resjunk false})}}} "
    ":targetList ({TARGETENTRY :expr {VAR :varno 1 :varattno 3} :resno 1 "
    r":resname we\{ird\)\ n :ressortgroupref 0 :resorigtbl 16400 :resorigcol 3 :resjunk false} "
    "{TARGETENTRY :expr {OPEXPR :args ({VAR :varno 1} {CONST :constvalue 4 [ 1 0 0 0 ]})} "
    ":resno 2 :resname id2 :resorigtbl 0 :resorigcol 0 :resjunk false} "
    "{TARGETENTRY :expr {VAR :varno 1 :varattno 1} :resno 3 :resname k :resorigtbl 16400 "
    ":resorigcol 1 :resjunk false} "
    "{TARGETENTRY :expr {VAR :varno 1} :resno 4 :resname name :resorigtbl 16400 "
    ":resorigcol 3 :resjunk true}) :setOperations <>})"
)


def test_view_origins_read_the_top_level_target_list() -> None:
    assert view_origins(TREE) == {1: (PEOPLE, 3), 3: (PEOPLE, 1)}
    assert view_origins(TREE[: len(TREE) // 2]) == {}  # cut short: nothing trusted
    assert view_origins("") == {} and view_origins("({QUERY :targetList <>})") == {}


def test_views_and_views_of_views_pass_the_key_through() -> None:
    cat = Catalog(
        {
            **CATALOG.relations,
            "public.v": Relation(
                "public", "v", "view", ("who", "n"), oid=17000, attnums=(1, 2),
                origins=((1, PEOPLE, 1),),  # who = people.id; n computed
            ),
            "public.vv": Relation(
                "public", "vv", "view", ("who",), oid=17001, attnums=(1,),
                origins=((1, 17000, 1),),
            ),
            "public.vn": Relation(
                "public", "vn", "view", ("name",), oid=17002, attnums=(1,),
                origins=((1, PEOPLE, 3),),  # people.name: not a key
            ),
        }
    )  # fmt: skip
    columns, _ = watch_map([PERSON], cat)
    assert columns[(17000, 1)] == columns[(17001, 1)] == "person"
    assert (17000, 2) not in columns and (17002, 1) not in columns


def test_canary_keys_in_their_wire_forms_past_the_cap() -> None:
    from proxy.ledger.rows import INT4, INT8, TEXT, UUID, Column, raw_decoys

    keys = frozenset({"900001", "0042", "7d444840-9dc0-11d1-b245-5ffdce74fad2"})
    assert raw_decoys(Column(0, "p", INT8, 1), keys) == frozenset({(900001).to_bytes(8, "big")})
    assert raw_decoys(Column(0, "p", INT4, 1), keys) == frozenset({(900001).to_bytes(4, "big")})
    assert raw_decoys(Column(0, "p", UUID, 1), keys) == frozenset(
        {bytes.fromhex("7d4448409dc011d1b2455ffdce74fad2")}
    )
    assert raw_decoys(Column(0, "p", INT8, 0), keys) == frozenset(k.encode() for k in keys)
    assert raw_decoys(Column(0, "p", TEXT, 1), frozenset({"Zoë"})) is None  # decode to compare
    assert raw_decoys(Column(0, "p", 1700, 1), keys) is None  # numeric: no wire form known
