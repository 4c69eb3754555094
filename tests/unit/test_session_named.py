"""Every run that can return rows is admitted, whatever made it (session + production hooks).

The hooks here are the real Enforcer with a guard (a 5-row cap, open rules),
so each trace shows what the session asks and what the guard answers: a
statement PREPAREd in SQL run by a protocol Bind/Execute, a cursor DECLAREd
in SQL run by FETCH or by a protocol Execute of its portal, EXECUTE in a
Query, names the session never saw made, and the lifetimes of these names.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from guard_helpers import ALICE, ruleset
from playbook import (
    BIND_COMPLETE,
    PARSE_COMPLETE,
    PORTAL_SUSPENDED,
    SYNC,
    Playbook,
    bind,
    command_complete,
    describe,
    error,
    execute,
    parse,
    query,
    ready_for_query,
    row_description,
    rows,
)

from proxy.actions import Decide
from proxy.catalog import Catalog, Relation
from proxy.enforce import Enforcer
from proxy.guard import Guard, MemoryStore
from proxy.hooks import Admission
from proxy.rules import Defaults, RuleSet

OPEN = Defaults(unparsed="allow", statements=["all"])
CAP = {"id": "cap", "max_rows_per_query": 5}


def rules(*entries: dict[str, Any]) -> RuleSet:
    return dataclasses.replace(ruleset(*entries), defaults=OPEN)


def hooked(*entries: dict[str, Any], status: bytes = b"I") -> tuple[Playbook, Enforcer]:
    """A playbook answered by the production hooks, as the I/O layer would."""
    r = rules(*entries)
    # The table the statements read: a user with a policy may not read unknown ones.
    known = Catalog({"public.t": Relation("public", "t", columns=("x",))})
    e = Enforcer(r, known, Guard(r, MemoryStore()))

    def policy(sql: str, extended: bool) -> Admission:
        return asyncio.run(e.decide(sql, ALICE, extended=extended))

    def runs(a: Decide) -> Admission:
        assert a.token is not None and a.params is not None
        return asyncio.run(e.execute(ALICE, a.token, a.params))

    return Playbook(policy, status=status, runs=runs), e


def ten() -> bytes:
    """The start of a result longer than the cap (its completion has not come yet)."""
    return row_description("x") + rows(*map(str, range(10)))


PREPARE = "PREPARE s AS SELECT x FROM t"
DECLARE = "DECLARE c CURSOR FOR SELECT x FROM t"


def prepared(pb: Playbook, sql: str = PREPARE, tag: str = "PREPARE") -> None:
    pb.client(query(sql))
    pb.server(command_complete(tag) + ready_for_query(pb.session.status))


def test_sql_prepared_statement_run_by_protocol_bind_execute_is_capped() -> None:
    pb, _ = hooked(CAP)
    prepared(pb)
    assert pb.client(bind("", "s") + execute("") + SYNC) == [
        "server B",
        f"decide {PREPARE!r}",
        "server E S",
    ]
    assert pb.server(BIND_COMPLETE + ten()) == ["client 2 T D*5", "cancel"]
    out = pb.server(error("57014") + ready_for_query())
    assert out[0] == f"finish {PREPARE!r} rows=5 cutoff error=54000"
    assert out[-1] == "client E:54000 Z:I"


def test_sql_cursor_run_by_protocol_execute_counts_across_executes() -> None:
    pb, _ = hooked(CAP, status=b"T")
    prepared(pb, DECLARE, "DECLARE CURSOR")
    assert pb.client(execute("c", 3) + SYNC) == [f"decide {DECLARE!r}", "server E S"]
    reply = row_description("x") + rows("1", "2", "3") + PORTAL_SUSPENDED
    assert pb.server(reply + ready_for_query(b"T"))[1] == f"finish {DECLARE!r} rows=3 suspended"
    # Every Execute of a cursor is put to the hooks (a reload may have come);
    # it goes on under its first run's admission, so the cap counts all of them.
    assert pb.client(execute("c", 10) + SYNC) == [f"decide {DECLARE!r}", "server E S"]
    assert pb.server(rows("4", "5", "6")) == ["client D*2", "cancel"]
    out = pb.server(error("57014") + ready_for_query(b"T"))
    assert out[0] == f"finish {DECLARE!r} rows=2 cutoff error=54000"


def test_fetch_runs_its_cursor_and_counts_across_fetches() -> None:
    pb, _ = hooked(CAP, status=b"T")
    prepared(pb, DECLARE, "DECLARE CURSOR")
    assert pb.client(query("FETCH 3 FROM c")) == [
        "decide 'FETCH 3 FROM c'",
        f"decide {DECLARE!r}",
        "server Q",
    ]
    reply = row_description("x") + rows("1", "2", "3") + command_complete("FETCH 3")
    assert pb.server(reply + ready_for_query(b"T"))[1] == "finish 'FETCH 3 FROM c' rows=3 FETCH 3"
    pb.client(query("FETCH 10 FROM c"))
    assert pb.server(row_description("x") + rows("4", "5", "6")) == ["client T D*2", "cancel"]


def test_declare_and_fetch_in_one_string() -> None:
    pb, _ = hooked(CAP)
    sql = f"BEGIN; {DECLARE}; FETCH ALL c"
    assert pb.client(query(sql)) == [f"decide {sql!r}", f"decide {DECLARE!r}", "server Q"]
    head = command_complete("BEGIN") + command_complete("DECLARE CURSOR")
    assert pb.server(head + ten())[-2:] == ["client C T D*5", "cancel"]
    assert pb.session.names.cursor("c") is not None


def test_execute_in_a_query_runs_the_prepared_statement_with_its_arguments() -> None:
    pb, _ = hooked(CAP)
    prepared(pb, "PREPARE s(int) AS SELECT x FROM t WHERE id = $1")
    seen: list[tuple[str, ...]] = []
    runs = pb.runs
    assert runs is not None

    def spy(a: Any) -> Any:
        seen.append(a.params or ())
        return runs(a)

    pb.runs = spy
    assert pb.client(query("EXECUTE s(42)"))[-1] == "server Q"
    assert seen == [("42",)]  # the detectors see EXECUTE's values as a Bind's
    assert pb.server(ten())[0] == "client T D*5"


def test_a_string_refused_by_one_of_its_runs_is_refused_whole() -> None:
    pb, _ = hooked(CAP)
    assert pb.client(query("SELECT 1; EXECUTE nobody")) == [
        "decide 'SELECT 1; EXECUTE nobody'",
        "decide \"<unknown statement 'nobody'>\"",
        "server Q",
    ]
    out = pb.server(error("42601") + ready_for_query())
    assert out == ["finish 'SELECT 1; EXECUTE nobody#1' rows=0 error=26000", "client E:26000 Z:I"]


def test_unknown_names_are_refused_under_a_policy() -> None:
    pb, _ = hooked(CAP)
    assert pb.client(bind("", "nobody") + execute("") + SYNC) == [
        "decide \"<unknown statement 'nobody'>\"",
        "server E S",
    ]
    out = pb.server(error("34000") + ready_for_query())
    assert out == [
        "finish \"<unknown statement 'nobody'>\" rows=0 error=26000",
        "client E:26000 Z:I",
    ]
    for msg, code in ((execute("p"), "34000"), (describe(b"S", "x"), "26000")):
        pb.client(msg + SYNC)
        assert pb.server(error("34000") + ready_for_query())[-1] == f"client E:{code} Z:I"


def test_unknown_names_pass_for_users_without_a_policy() -> None:
    pb, _ = hooked()  # no extraction entries, no rules: no policy
    assert pb.client(bind("", "s") + execute("") + SYNC) == [
        "decide \"<unknown statement 's'>\"",
        "server B E S",  # the portal it made is known now
    ]
    assert pb.client(execute("elsewhere") + SYNC) == [
        "decide \"<unknown portal 'elsewhere'>\"",
        "server E S",
    ]


def test_a_name_is_recorded_only_once_the_upstream_completes_it() -> None:
    pb, _ = hooked(CAP)
    pb.client(query(PREPARE))
    assert "s" not in pb.session.names.prepared
    pb.server(error("42P05") + ready_for_query())  # already exists: nothing recorded
    assert "s" not in pb.session.names.prepared
    prepared(pb)
    assert "s" in pb.session.names.prepared


def test_cursor_lifetimes_follow_postgresql() -> None:
    pb, _ = hooked(CAP, status=b"T")
    hold = "DECLARE h CURSOR WITH HOLD FOR SELECT 1"
    prepared(pb, DECLARE, "DECLARE CURSOR")
    prepared(pb, hold, "DECLARE CURSOR")
    assert set(pb.session.names.cursors) == {"c", "h"}
    pb.client(query("COMMIT"))
    pb.server(command_complete("COMMIT") + ready_for_query(b"I"))
    assert set(pb.session.names.cursors) == {"h"}  # WITH HOLD outlives its transaction
    prepared(pb, "CLOSE ALL", "CLOSE CURSOR ALL")
    assert not pb.session.names.cursors


def test_deallocate_discard_and_protocol_close_drop_statements() -> None:
    pb, _ = hooked(CAP)
    prepared(pb)
    prepared(pb, "DEALLOCATE PREPARE s", "DEALLOCATE")
    assert "s" not in pb.session.names.prepared
    prepared(pb)
    pb.client(parse("p", "SELECT 1") + SYNC)
    pb.server(PARSE_COMPLETE + ready_for_query())
    prepared(pb, "DISCARD ALL", "DISCARD ALL")
    assert not pb.session.names.prepared and not pb.session.statements
    prepared(pb)
    pb.client(b"C\x00\x00\x00\x07Ss\x00" + SYNC)  # protocol Close of the SQL-made statement
    assert "s" not in pb.session.names.prepared


def test_prepare_through_the_extended_protocol_makes_a_name() -> None:
    pb, _ = hooked(CAP)
    pb.client(parse("", PREPARE) + bind() + execute() + SYNC)
    pb.server(PARSE_COMPLETE + BIND_COMPLETE + command_complete("PREPARE") + ready_for_query())
    assert "s" in pb.session.names.prepared


def test_after_a_reload_an_open_cursor_runs_under_the_new_limits() -> None:
    pb, e = hooked(CAP, status=b"T")
    prepared(pb, DECLARE, "DECLARE CURSOR")
    e.reload(rules({"id": "other-cap", "max_rows_per_query": 7}))
    pb.client(query("FETCH 1 FROM c"))  # same text upstream: the new cap applies
    out = pb.server(row_description("x") + rows(*"12345678"))
    assert out == ["client T D*7", "cancel"]


def test_a_run_pipelined_behind_its_declare_finds_the_cursor_in_flight() -> None:
    pb, _ = hooked(CAP, status=b"T")
    fetch = "FETCH ALL FROM c"
    batch = parse("", DECLARE) + bind() + execute() + parse("f", fetch) + bind("", "f")
    assert pb.client(batch + execute() + SYNC) == [
        f"decide {DECLARE!r}",
        "server P B",
        f"decide {DECLARE!r}",  # the DECLARE's own run: policy only, no rows
        "server E",
        f"decide {fetch!r}",
        "server P B",
        f"decide {DECLARE!r}",  # the FETCH: a run of the cursor, not yet confirmed
        "server E S",
    ]
    head = PARSE_COMPLETE + BIND_COMPLETE + command_complete("DECLARE CURSOR")
    out = pb.server(head + PARSE_COMPLETE + BIND_COMPLETE + ten())
    assert out[-2:] == ["client C 1 2 T D*5", "cancel"]  # capped as a run of c
    assert pb.session.names.cursor("c") is not None


def test_a_refused_fetch_leaves_its_cursor_to_be_decided_afresh() -> None:
    pb, _ = hooked({"id": "q", "window": "1h", "max_queries": 1, "action": "block"}, status=b"T")
    hold = "DECLARE h CURSOR WITH HOLD FOR SELECT x FROM t"
    prepared(pb, hold, "DECLARE CURSOR")
    pb.client(query("SELECT 1"))  # uses the one query the budget allows
    pb.server(command_complete("SELECT 0") + ready_for_query(b"T"))
    declared = pb.session.names.cursors["h"].plan
    pb.client(query("FETCH 1 FROM h"))
    assert pb.server(error("42601") + ready_for_query(b"E"))[-1] == "client E:53400 Z:E"
    assert pb.session.names.cursors["h"].plan is declared


def test_a_cut_off_fetch_counts_so_the_cursor_cannot_be_read_past_the_cap() -> None:
    # The cancel lands after the server finished: the cursor survives the cut-off
    # inside the transaction, and looping FETCH cap+1 must not read the whole table.
    pb, _ = hooked(CAP, status=b"T")
    prepared(pb, DECLARE, "DECLARE CURSOR")
    seen = []
    for i in range(3):
        pb.client(query("FETCH 6 FROM c"))
        batch = rows(*map(str, range(6 * i, 6 * i + 6)))
        out = pb.server(
            row_description("x") + batch + command_complete("FETCH 6") + ready_for_query(b"T")
        )
        seen.append(next(o for o in out if o.startswith("client ")))
        pb.cancel_done()
    assert seen == ["client T D*5", "client T", "client T"]
