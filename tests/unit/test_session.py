"""The relay-phase session as conversations: client and server bytes in, actions out.

Each test reads top to bottom like a protocol trace (see playbook.py for the
notation). Server replies are what PostgreSQL sends for the client messages;
the session must forward them untouched, audit each statement once, put
proxy-made errors exactly where PostgreSQL would, and emit exactly one
ReadyForQuery per Sync or Query.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from playbook import (
    BIND_COMPLETE,
    CLIENT_COPY_DONE,
    CLOSE_COMPLETE,
    COPY_DONE,
    EMPTY_QUERY,
    FLUSH,
    NO_DATA,
    PARSE_COMPLETE,
    PORTAL_SUSPENDED,
    SYNC,
    TERMINATE,
    Playbook,
    Policy,
    bind,
    close,
    command_complete,
    copy_data,
    copy_fail,
    copy_response,
    data_row,
    describe,
    error,
    execute,
    extended,
    finishes,
    notice,
    notification,
    parameter_description,
    parameter_status,
    parse,
    query,
    ready_for_query,
    row_description,
    rows,
    select,
    tokens,
)

from proxy.actions import Close, Decide, ToClient, ToServer
from proxy.errors import Blocked, VolumeLimit
from proxy.gucs import Change
from proxy.hooks import Admission, StreamLimits
from proxy.identity import SessionFacts
from proxy.messages import parse as parse_message
from proxy.session import REFUSED_QUERY, Session
from proxy.wire import frame

BLOCK = Admission(action="block", error=Blocked("no-secrets", "secret column"))


def policy(
    blocked: tuple[str, ...] = (),
    caps: dict[str, int] | None = None,
    split: dict[str, int] | None = None,
) -> Policy:
    """Block statements containing any of `blocked`; cap rows of `caps`; count statements."""

    def decide(sql: str, extended: bool) -> Admission:
        if any(b in sql for b in blocked):
            return BLOCK
        n = (split or {}).get(sql, 1)
        stmts: list[dict[str, object]] = [{} for _ in range(n)]
        for key, cap in (caps or {}).items():
            if key in sql:
                return Admission(limits=StreamLimits(max_rows=cap, rule="cap"), statements=stmts)
        return Admission(statements=stmts)

    return decide


# ---------------------------------------------------------------- simple query


def test_simple_query() -> None:
    pb = Playbook()
    assert pb.client(query("select x from t")) == ["decide 'select x from t'", "server Q"]
    assert pb.server(select(2)) == [
        "client T D*2",
        "finish 'select x from t' rows=2 SELECT 2",
        "client C Z:I",
    ]
    assert not pb.session.queue


def test_decide_waits_for_the_hooks_and_holds_later_messages() -> None:
    pb = Playbook()
    assert pb.client(query("select 1") + query("select 2"), auto=False) == ["decide 'select 1'"]
    assert pb.decided(Admission()) == ["server Q", "decide 'select 2'", "server Q"]


def test_rewrite_and_throttle_are_applied_before_forwarding() -> None:
    pb = Playbook()
    pb.client(query("select ssn from people"), auto=False)
    out = pb.session.decided(Admission(action="rewrite", sql="select '****' from people", delay=2))
    assert [type(a).__name__ for a in out] == ["Throttle", "ToServer"]
    assert isinstance(out[1], ToServer)
    assert out[1].data == query("select '****' from people")


def test_multi_statement_query_finishes_each_statement_with_its_rows() -> None:
    sql = "select 1; select 2"
    pb = Playbook(policy(split={sql: 2}))
    pb.client(query(sql))
    reply = (
        row_description("a")
        + rows("1")
        + command_complete("SELECT 1")
        + row_description("b")
        + rows("1", "2")
        + command_complete("SELECT 2")
        + ready_for_query()
    )
    assert pb.server(reply) == [
        "client T D",
        "finish 'select 1; select 2' rows=1 SELECT 1",
        "client C T D*2",
        "finish 'select 1; select 2#1' rows=2 SELECT 2",
        "client C Z:I",
    ]


def test_multi_statement_counted_as_one_by_the_hooks_still_finishes_each() -> None:
    pb = Playbook()
    pb.client(query("set a=1; select 2"))
    reply = command_complete("SET") + row_description("b") + rows("2")
    reply += command_complete("SELECT 1") + ready_for_query()
    assert pb.server(reply) == [
        "finish 'set a=1; select 2' rows=0 SET",
        "client C T D",
        "finish 'set a=1; select 2#1' rows=1 SELECT 1",
        "client C Z:I",
    ]


def test_error_in_a_multi_statement_query_audits_the_rest_as_not_executed() -> None:
    sql = "select 1; select 1/0; select 3"
    pb = Playbook(policy(split={sql: 3}))
    pb.client(query(sql))
    reply = row_description("a") + rows("1") + command_complete("SELECT 1")
    reply += error("22012", "division by zero") + ready_for_query()
    assert pb.server(reply) == [
        "client T D",
        f"finish {sql!r} rows=1 SELECT 1",
        "client C",
        f"finish '{sql}#1' rows=0 error=22012",
        "client E:22012",
        f"finish '{sql}#2' rows=0 error=not executed",
        "client Z:I",
    ]


def test_error_after_more_results_than_counted_is_still_audited() -> None:
    pb = Playbook()
    pb.client(query("select 1; select 1/0"))
    reply = row_description("a") + rows("1") + command_complete("SELECT 1")
    reply += error("22012") + ready_for_query()
    assert pb.server(reply) == [
        "client T D",
        "finish 'select 1; select 1/0' rows=1 SELECT 1",
        "client C",
        "finish 'select 1; select 1/0#1' rows=0 error=22012",
        "client E:22012 Z:I",
    ]


def test_empty_query() -> None:
    pb = Playbook()
    pb.client(query(""))
    assert pb.server(EMPTY_QUERY + ready_for_query()) == ["finish '' rows=0", "client I Z:I"]


def test_server_bytes_split_at_every_boundary_reach_the_client_unchanged() -> None:
    reply = (
        parameter_status("TimeZone", "UTC")
        + row_description("a", "b")
        + data_row("1", None)
        + notice("hello")
        + data_row("2", "x" * 40)
        + command_complete("SELECT 2")
        + ready_for_query(b"T")
    )
    for cut in range(1, len(reply)):
        pb = Playbook()
        pb.client(query("select a, b from t"))
        got = pb.raw(reply[:cut]) + pb.raw(reply[cut:])
        assert got == reply, cut
        (stmt,) = finishes(pb.actions)
        assert (stmt.rows, stmt.tag) == (2, "SELECT 2")
        assert pb.session.status == b"T"


def test_server_bytes_fed_one_at_a_time() -> None:
    pb = Playbook()
    pb.client(query("select 1"))
    reply = select(3)
    got = b"".join(pb.raw(reply[i : i + 1]) for i in range(len(reply)))
    assert got == reply


def test_client_bytes_fed_one_at_a_time_reach_the_server_unchanged() -> None:
    batch = query("select 1") + extended("select $1", "s1", "p1") + SYNC + FLUSH
    pb = Playbook()
    got = b"".join(pb.raw(batch[i : i + 1], to=ToServer) for i in range(len(batch)))
    assert got == batch


# ---------------------------------------------------------------- extended protocol


def test_named_statement_and_portal_then_reuse_without_a_new_decision() -> None:
    pb = Playbook()
    batch = parse("s1", "select $1::int") + bind("p1", "s1", "5")
    batch += describe(b"P", "p1") + execute("p1") + SYNC
    assert pb.client(batch) == ["decide 'select $1::int'", "server P B D E S"]
    reply = PARSE_COMPLETE + BIND_COMPLETE + row_description("int4") + rows("5")
    assert pb.server(reply + command_complete("SELECT 1") + ready_for_query()) == [
        "client 1 2 T D",
        "finish 'select $1::int' rows=1 SELECT 1",
        "client C Z:I",
    ]
    # Bind and Execute of the prepared statement: no Parse, no new decision.
    assert pb.client(bind("", "s1", "7") + execute("") + SYNC) == ["server B E S"]
    reply = BIND_COMPLETE + rows("7", "7") + command_complete("SELECT 2") + ready_for_query()
    assert pb.server(reply) == [
        "client 2 D*2",
        "finish 'select $1::int' rows=2 SELECT 2",
        "client C Z:I",
    ]
    assert pb.client(close(b"S", "s1") + close(b"P", "p1") + SYNC) == ["server C*2 S"]
    assert pb.server(CLOSE_COMPLETE * 2 + ready_for_query()) == ["client 3*2 Z:I"]
    assert "s1" not in pb.session.statements and "p1" not in pb.session.portals


def test_unnamed_statement_is_replaced_by_the_next_parse() -> None:
    pb = Playbook()
    pb.client(extended("select 1") + SYNC)
    pb.server(PARSE_COMPLETE + BIND_COMPLETE + NO_DATA + command_complete("SELECT 0"))
    pb.server(ready_for_query())
    pb.client(extended("select 2") + SYNC)
    reply = PARSE_COMPLETE + BIND_COMPLETE + row_description("a") + rows("2")
    assert pb.server(reply + command_complete("SELECT 1") + ready_for_query())[1] == (
        "finish 'select 2' rows=1 SELECT 1"
    )


def test_describe_statement_gets_parameter_description_and_row_description() -> None:
    pb = Playbook()
    assert pb.client(parse("s", "select $1") + describe(b"S", "s") + SYNC) == [
        "decide 'select $1'",
        "server P D S",
    ]
    reply = PARSE_COMPLETE + parameter_description(25) + row_description("a")
    assert pb.server(reply + ready_for_query()) == ["client 1 t T Z:I"]
    assert not pb.session.queue


def test_pipeline_with_several_syncs() -> None:
    pb = Playbook()
    batch = b"".join(extended(f"select {i}") + SYNC for i in range(3))
    assert pb.client(batch) == [
        "decide 'select 0'",
        "server P B D E S",
        "decide 'select 1'",
        "server P B D E S",
        "decide 'select 2'",
        "server P B D E S",
    ]
    one = PARSE_COMPLETE + BIND_COMPLETE + row_description("a") + rows("x")
    one += command_complete("SELECT 1") + ready_for_query()
    assert pb.server(one * 3) == [
        "client 1 2 T D",
        "finish 'select 0' rows=1 SELECT 1",
        "client C Z:I 1 2 T D",
        "finish 'select 1' rows=1 SELECT 1",
        "client C Z:I 1 2 T D",
        "finish 'select 2' rows=1 SELECT 1",
        "client C Z:I",
    ]


def test_pipeline_with_one_sync_psycopg_style() -> None:
    pb = Playbook()
    pb.client(b"".join(extended(f"select {i}") for i in range(3)) + SYNC)
    one = PARSE_COMPLETE + BIND_COMPLETE + row_description("a") + rows("x")
    one += command_complete("SELECT 1")
    out = pb.server(one * 3 + ready_for_query())
    assert [line for line in out if line.startswith("finish")] == [
        f"finish 'select {i}' rows=1 SELECT 1" for i in range(3)
    ]
    assert out[-1].endswith("Z:I")


def test_execute_with_row_limit_and_portal_suspended() -> None:
    pb = Playbook(status=b"T")
    pb.client(parse("", "select n from big") + bind("c1") + execute("c1", 2) + SYNC)
    reply = PARSE_COMPLETE + BIND_COMPLETE + rows("1", "2") + PORTAL_SUSPENDED
    assert pb.server(reply + ready_for_query(b"T")) == [
        "client 1 2 D*2",
        "finish 'select n from big' rows=2 suspended",
        "client s Z:T",
    ]
    assert pb.client(execute("c1", 2) + SYNC) == ["server E S"]
    assert pb.server(rows("3") + command_complete("SELECT 3") + ready_for_query(b"T")) == [
        "client D",
        "finish 'select n from big' rows=1 SELECT 3",
        "client C Z:T",
    ]


def test_a_portal_run_is_decided_at_its_first_execute() -> None:
    """`per_execute`: the hooks decide each run of a prepared statement, not its Parse."""
    answers = [
        Admission(per_execute=True),  # the Parse
        Admission(delay=2.0, limits=StreamLimits(max_rows=3, rule="cap")),  # portal c1
        Admission(error=VolumeLimit("budget", "used up")),  # portal c2
    ]
    pb = Playbook(lambda sql, extended: answers.pop(0), status=b"T")
    sql = "select n from big where k = $1"
    assert pb.client(parse("s1", sql) + bind("c1", "s1", "7") + execute("c1", 2) + SYNC) == [
        f"decide {sql!r}",
        "server P B",
        f"decide {sql!r}",
        "throttle 2.0",
        "server E S",
    ]
    reply = PARSE_COMPLETE + BIND_COMPLETE + rows("1", "2") + PORTAL_SUSPENDED
    assert pb.server(reply + ready_for_query(b"T"))[1] == f"finish {sql!r} rows=2 suspended"
    # The suspended portal goes on under its run's decision: no new one, and
    # its cap counts the rows the run has already sent.
    assert pb.client(execute("c1", 2) + SYNC) == ["server E S"]
    assert pb.server(rows("3", "4")) == ["client D", "cancel"]
    out = pb.server(error("57014") + ready_for_query(b"T"))
    assert out[0] == f"finish {sql!r} rows=1 cutoff error=54000"
    pb.cancel_done()
    # A new portal of the same statement is a new run: decided again, here refused.
    assert pb.client(bind("c2", "s1", "8") + execute("c2") + SYNC) == [
        "server B",
        f"decide {sql!r}",
        "server E S",
    ]
    assert pb.server(BIND_COMPLETE + error("34000") + ready_for_query(b"E")) == [
        "client 2",
        f"finish {sql!r} rows=0 error=53400",
        "client E:53400 Z:E",
    ]
    assert not answers


def test_flush_passes_through_and_replies_come_back_without_sync() -> None:
    pb = Playbook()
    # asyncpg prepares with Parse + Describe(S) + Flush and no Sync.
    name = "__asyncpg_stmt_1__"
    assert pb.client(parse(name, "select 1") + describe(b"S", name) + FLUSH) == [
        "decide 'select 1'",
        "server P D H",
    ]
    assert pb.server(PARSE_COMPLETE + parameter_description() + row_description("a")) == [
        "client 1 t T"
    ]
    assert not pb.session.queue
    # node-postgres `rows`: Execute(rows) + Flush, then PortalSuspended, no Sync yet.
    assert pb.client(bind("", name) + execute("", 1) + FLUSH) == ["server B E H"]
    assert pb.server(BIND_COMPLETE + rows("1") + PORTAL_SUSPENDED) == [
        "client 2 D",
        "finish 'select 1' rows=1 suspended",
        "client s",
    ]
    assert pb.client(SYNC) == ["server S"]
    assert pb.server(ready_for_query()) == ["client Z:I"]


# ---------------------------------------------------------------- COPY


def test_copy_out_counts_copy_data() -> None:
    pb = Playbook()
    pb.client(query("copy t to stdout"))
    reply = copy_response(b"H") + copy_data(b"1\n") + copy_data(b"2\n") + COPY_DONE
    assert pb.server(reply + command_complete("COPY 2") + ready_for_query()) == [
        "client H d*2 c",
        "finish 'copy t to stdout' rows=2 COPY 2",
        "client C Z:I",
    ]


def test_copy_in_relays_client_data() -> None:
    pb = Playbook()
    pb.client(query("copy t from stdin"))
    assert pb.server(copy_response(b"G")) == ["client G"]
    data = copy_data(b"1\n") + copy_data(b"2\n") + CLIENT_COPY_DONE
    assert pb.client(data) == ["server d*2 c"]
    assert pb.server(command_complete("COPY 2") + ready_for_query()) == [
        "finish 'copy t from stdin' rows=0 COPY 2",
        "client C Z:I",
    ]


def test_copy_in_fail() -> None:
    pb = Playbook()
    pb.client(query("copy t from stdin"))
    pb.server(copy_response(b"G"))
    assert pb.client(copy_data(b"1\n") + copy_fail("client gave up")) == ["server d f"]
    assert pb.server(error("57014", "COPY from stdin failed") + ready_for_query()) == [
        "finish 'copy t from stdin' rows=0 error=57014",
        "client E:57014 Z:I",
    ]


def test_extended_copy_in_with_libpq_syncs() -> None:
    """libpq sends P/B/D/E/S, then CopyDone + Sync; the server ignores the Sync sent mid-COPY."""
    pb = Playbook()
    assert pb.client(extended("copy t from stdin") + SYNC) == [
        "decide 'copy t from stdin'",
        "server P B D E S",
    ]
    assert pb.server(PARSE_COMPLETE + BIND_COMPLETE + NO_DATA + copy_response(b"G")) == [
        "client 1 2 n G"
    ]
    assert pb.client(copy_data(b"1\n") + CLIENT_COPY_DONE + SYNC) == ["server d c S"]
    assert pb.server(command_complete("COPY 1") + ready_for_query()) == [
        "finish 'copy t from stdin' rows=0 COPY 1",
        "client C Z:I",
    ]
    assert not pb.session.queue
    # The session is still in step: the next statement is audited as itself.
    pb.client(query("select 1"))
    assert pb.server(select(1))[1] == "finish 'select 1' rows=1 SELECT 1"


def test_async_messages_are_forwarded_at_any_time_including_mid_copy() -> None:
    pb = Playbook()
    # Idle: nothing outstanding.
    assert pb.server(notification(42, "chan", "hi")) == ["client A"]
    pb.client(query("copy t to stdout"))
    reply = copy_response(b"H") + copy_data(b"1\n") + notice("careful")
    reply += parameter_status("application_name", "psql-2") + notification(42, "chan", "x")
    reply += copy_data(b"2\n") + COPY_DONE + command_complete("COPY 2") + ready_for_query()
    assert pb.server(reply) == [
        "client H d N S A d c",
        "finish 'copy t to stdout' rows=2 COPY 2",
        "client C Z:I",
    ]
    assert pb.session.parameters["application_name"] == "psql-2"
    assert pb.session.facts.application == "psql-2"


# ---------------------------------------------------------------- errors


def test_upstream_error_mid_batch_skips_to_sync() -> None:
    pb = Playbook()
    pb.client(extended("select 1/0") + extended("select 2") + SYNC)
    reply = PARSE_COMPLETE + BIND_COMPLETE + row_description("a") + error("22012")
    assert pb.server(reply + ready_for_query()) == [
        "client 1 2 T",
        "finish 'select 1/0' rows=0 error=22012",
        "client E:22012",
        "finish 'select 2' rows=0 error=not executed",
        "client Z:I",
    ]
    assert not pb.session.queue


def test_upstream_error_before_sync_discards_client_messages_until_sync() -> None:
    pb = Playbook()
    pb.client(parse("", "selec 1") + FLUSH)
    assert pb.server(error("42601")) == ["client E:42601"]
    # PostgreSQL ignores these until Sync, and so does the session.
    assert pb.client(bind() + execute() + SYNC) == ["server S"]
    assert pb.server(ready_for_query()) == ["client Z:I"]


def test_failed_reparse_of_a_named_statement_keeps_the_old_one() -> None:
    pb = Playbook(policy(caps={"big": 1}))
    pb.client(parse("s1", "select 1") + SYNC)
    pb.server(PARSE_COMPLETE + ready_for_query())
    pb.client(parse("s1", "select big") + SYNC)
    # 42P05: prepared statement "s1" already exists; upstream keeps `select 1`.
    pb.server(error("42P05") + ready_for_query())
    pb.client(bind("", "s1") + execute() + SYNC)
    assert pb.server(BIND_COMPLETE + rows("1", "1") + command_complete("SELECT 2")) == [
        "client 2 D*2",
        "finish 'select 1' rows=2 SELECT 2",
        "client C",
    ]


def test_refused_parse_sends_a_stand_in_and_discards_until_sync() -> None:
    pb = Playbook(policy(blocked=("secret",)))
    # The refused Parse never goes upstream; an Execute of no portal does, so the
    # upstream fails the implicit transaction as it would for any error.
    assert pb.client(extended("select secret from t") + SYNC) == [
        "decide 'select secret from t'",
        "server E S",
    ]
    stand_in = next(a for a in pb.actions if isinstance(a, ToServer)).data
    assert stand_in.startswith(b"E") and b"oversight-refused-" in stand_in
    assert pb.server(error("34000")) == [
        "finish 'select secret from t' rows=0 error=42501",
        "client E:42501",
    ]
    assert pb.server(ready_for_query()) == ["client Z:I"]
    assert pb.client(query("select 1")) == ["decide 'select 1'", "server Q"]


def test_refused_parse_in_a_transaction_leaves_it_failed_as_the_upstream_says() -> None:
    pb = Playbook(policy(blocked=("secret",)), status=b"T")
    pb.client(parse("", "select secret") + bind() + execute() + SYNC)
    assert pb.server(error("34000")) == [
        "finish 'select secret' rows=0 error=42501",
        "client E:42501",
    ]
    assert pb.server(ready_for_query(b"E")) == ["client Z:E"]
    assert pb.session.status == b"E"


def test_refused_parse_waits_behind_replies_still_owed() -> None:
    pb = Playbook(policy(blocked=("secret",)))
    batch = extended("select 1") + parse("", "select secret") + bind() + execute() + SYNC
    assert pb.client(batch) == [
        "decide 'select 1'",
        "server P B D E",
        "decide 'select secret'",
        "server E S",
    ]
    reply = PARSE_COMPLETE + BIND_COMPLETE + row_description("a") + rows("1")
    assert pb.server(reply + command_complete("SELECT 1") + error("34000")) == [
        "client 1 2 T D",
        "finish 'select 1' rows=1 SELECT 1",
        "client C",
        "finish 'select secret' rows=0 error=42501",
        "client E:42501",
    ]
    assert pb.server(ready_for_query()) == ["client Z:I"]


def test_refused_parse_after_an_upstream_error_sends_only_the_first_error() -> None:
    pb = Playbook(policy(blocked=("secret",)))
    pb.client(extended("select 1/0") + parse("", "select secret") + execute() + SYNC)
    # The upstream skips the stand-in as it skips everything up to Sync.
    assert pb.server(PARSE_COMPLETE + BIND_COMPLETE + NO_DATA + error("22012")) == [
        "client 1 2 n",
        "finish 'select 1/0' rows=0 error=22012",
        "client E:22012",
        "finish 'select secret' rows=0 error=42501",
    ]
    assert pb.server(ready_for_query()) == ["client Z:I"]


def test_refused_query_answers_the_refusal_and_the_upstream_status() -> None:
    pb = Playbook(policy(blocked=("secret",)), status=b"T")
    assert pb.client(query("select secret from t")) == [
        "decide 'select secret from t'",
        "server Q",
    ]
    stand_in = next(a for a in pb.actions if isinstance(a, ToServer)).data
    assert stand_in == query(REFUSED_QUERY)
    assert pb.server(error("42601") + ready_for_query(b"E")) == [
        "finish 'select secret from t' rows=0 error=42501",
        "client E:42501 Z:E",
    ]
    assert not pb.session.queue


def test_refused_query_pipelined_behind_an_outstanding_query() -> None:
    pb = Playbook(policy(blocked=("secret",)))
    assert pb.client(query("begin") + query("select secret") + query("select 2")) == [
        "decide 'begin'",
        "server Q",
        "decide 'select secret'",
        "server Q",
        "decide 'select 2'",
        "server Q",
    ]
    reply = command_complete("BEGIN") + ready_for_query(b"T")
    assert pb.server(reply + error("42601") + ready_for_query(b"E")) == [
        "finish 'begin' rows=0 BEGIN",
        "client C Z:T",
        "finish 'select secret' rows=0 error=42501",
        "client E:42501 Z:E",
    ]
    assert pb.server(error("25P02") + ready_for_query(b"E")) == [
        "finish 'select 2' rows=0 error=25P02",
        "client E:25P02 Z:E",
    ]


def test_refusal_drops_whatever_a_stand_in_would_stream() -> None:
    # Cannot happen (the portal name is random), but must not leak if it did.
    pb = Playbook(policy(blocked=("secret",)))
    pb.client(parse("", "select secret") + bind() + execute() + SYNC)
    assert pb.server(row_description("a") + rows("1", "2") + command_complete("SELECT 2")) == [
        "finish 'select secret' rows=0 error=42501",
        "client E:42501",
    ]
    assert pb.server(ready_for_query()) == ["client Z:I"]


# ---------------------------------------------------------------- stream limits


def test_cap_in_simple_query_cuts_cancels_and_recovers() -> None:
    pb = Playbook(policy(caps={"big": 3}))
    pb.client(query("select n from big"))
    assert pb.server(row_description("n") + rows("1", "2", "3", "4", "5")) == [
        "client T D*3",
        "cancel",
    ]
    # Messages the client sends now wait until the cancel has gone out.
    assert pb.client(query("select 1")) == []
    assert pb.server(rows("6", "7") + error("57014", "canceling statement")) == [
        "finish 'select n from big' rows=3 cutoff error=54000",
        "client E:54000",
    ]
    assert pb.server(ready_for_query()) == ["client Z:I"]
    assert pb.cancel_done() == ["decide 'select 1'", "server Q"]
    assert pb.server(select(1))[1] == "finish 'select 1' rows=1 SELECT 1"


def test_cap_error_message_names_the_limit_and_rule() -> None:
    pb = Playbook(policy(caps={"big": 2}))
    pb.client(query("select n from big"))
    sent = pb.raw(row_description("n") + rows("1", "2", "3") + error("57014") + ready_for_query())
    assert b"oversight: result limit of 2 rows reached (cap)" in sent


def test_cap_exactly_reached_is_not_a_cutoff() -> None:
    pb = Playbook(policy(caps={"big": 3}))
    pb.client(query("select n from big"))
    assert pb.server(select(3)) == [
        "client T D*3",
        "finish 'select n from big' rows=3 SELECT 3",
        "client C Z:I",
    ]


def test_cap_when_the_query_ends_before_the_cancel_lands() -> None:
    sql = "select n from big; select 2"
    pb = Playbook(policy(caps={"big": 1}, split={sql: 2}))
    pb.client(query(sql))
    reply = row_description("n") + rows("1", "2") + command_complete("SELECT 2")
    reply += row_description("x") + rows("2") + command_complete("SELECT 1") + ready_for_query()
    assert pb.server(reply) == [
        "client T D",
        "cancel",
        f"finish {sql!r} rows=1 cutoff error=54000",
        "client E:54000",
        f"finish '{sql}#1' rows=0 error=not executed or discarded",
        "client Z:I",
    ]


def test_cap_in_extended_protocol() -> None:
    pb = Playbook(policy(caps={"big": 2}))
    pb.client(extended("select n from big") + extended("select 2") + SYNC)
    reply = PARSE_COMPLETE + BIND_COMPLETE + row_description("n") + rows("1", "2", "3")
    assert pb.server(reply) == ["client 1 2 T D*2", "cancel"]
    assert pb.server(error("57014") + ready_for_query()) == [
        "finish 'select n from big' rows=2 cutoff error=54000",
        "client E:54000",
        "finish 'select 2' rows=0 error=not executed",
        "client Z:I",
    ]
    assert pb.cancel_done() == []
    pb.client(extended("select 3") + SYNC)
    reply = PARSE_COMPLETE + BIND_COMPLETE + NO_DATA + command_complete("SELECT 0")
    assert pb.server(reply + ready_for_query()) == [
        "client 1 2 n",
        "finish 'select 3' rows=0 SELECT 0",
        "client C Z:I",
    ]


def test_cap_in_extended_protocol_when_the_batch_ends_before_the_cancel_lands() -> None:
    pb = Playbook(policy(caps={"big": 2}))
    pb.client(extended("select n from big") + extended("select 2") + SYNC)
    # The upstream finished everything before the cancel arrived: no 57014.
    reply = PARSE_COMPLETE + BIND_COMPLETE + row_description("n") + rows("1", "2", "3")
    reply += command_complete("SELECT 3")
    reply += PARSE_COMPLETE + BIND_COMPLETE + row_description("x") + rows("2")
    reply += command_complete("SELECT 1") + ready_for_query()
    assert pb.server(reply) == [
        "client 1 2 T D*2",
        "cancel",
        "finish 'select n from big' rows=2 cutoff error=54000",
        "client E:54000",
        "finish 'select 2' rows=0 error=not executed",
        "client Z:I",
    ]


def test_cap_holds_across_executes_of_one_portal() -> None:
    pb = Playbook(policy(caps={"big": 3}), status=b"T")
    pb.client(parse("", "select n from big") + bind("c1") + execute("c1", 2) + SYNC)
    reply = PARSE_COMPLETE + BIND_COMPLETE + rows("1", "2") + PORTAL_SUSPENDED
    pb.server(reply + ready_for_query(b"T"))
    pb.client(execute("c1", 2) + SYNC)
    assert pb.server(rows("3", "4")) == ["client D", "cancel"]
    assert pb.server(error("57014") + ready_for_query(b"E")) == [
        "finish 'select n from big' rows=1 cutoff error=54000",
        "client E:54000 Z:E",
    ]


def test_cap_with_copy_to_stdout() -> None:
    pb = Playbook(policy(caps={"copy": 2}))
    pb.client(query("copy big to stdout"))
    reply = copy_response(b"H") + b"".join(copy_data(b"%d\n" % i) for i in range(4))
    assert pb.server(reply) == ["client H d*2", "cancel"]
    assert pb.server(error("57014") + ready_for_query()) == [
        "finish 'copy big to stdout' rows=2 cutoff error=54000",
        "client E:54000 Z:I",
    ]


def test_cap_with_copy_to_stdout_finishing_before_the_cancel() -> None:
    pb = Playbook(policy(caps={"copy": 1}))
    pb.client(query("copy big to stdout"))
    reply = copy_response(b"H") + copy_data(b"1\n") + copy_data(b"2\n") + COPY_DONE
    assert pb.server(reply + command_complete("COPY 2") + ready_for_query()) == [
        "client H d",
        "cancel",
        "finish 'copy big to stdout' rows=1 cutoff error=54000",
        "client E:54000 Z:I",
    ]


# ---------------------------------------------------------------- ready for query, ending


def test_one_ready_for_query_per_sync_or_query() -> None:
    pb = Playbook(policy(blocked=("secret",), caps={"big": 1}))
    client = (
        query("select 1")
        + query("select secret")
        + extended("select 2")
        + SYNC
        + extended("select secret")
        + SYNC
        + extended("select 1/0")
        + extended("select 3")
        + SYNC
        + SYNC
    )
    pb.client(client)
    one = PARSE_COMPLETE + BIND_COMPLETE + row_description("a") + rows("x")
    server = select(1) + error("42601") + ready_for_query()  # the refused Query's stand-in
    server += one + command_complete("SELECT 1") + ready_for_query()
    server += error("34000") + ready_for_query()  # the refused Parse's stand-in, and Sync
    server += PARSE_COMPLETE + BIND_COMPLETE + row_description("a") + error("22012")
    server += ready_for_query() + ready_for_query()
    sent = pb.raw(server)
    zs = [t for t in tokens(sent) if t.startswith("Z")]
    assert len(zs) == 6  # two Queries (one refused) and four Syncs
    assert not pb.session.queue


def test_a_parameter_the_proxy_cannot_parse_under_ends_the_session() -> None:
    pb = Playbook()
    pb.client(query("select my_function()"))
    reply = select(1) + parameter_status("standard_conforming_strings", "off")
    reply += select(1)  # whatever follows was read by the server under the new setting
    assert pb.server(reply) == [
        "client T D",
        "finish 'select my_function()' rows=1 SELECT 1",
        "client C Z:I",
        "close 0A000",
    ]
    close = pb.actions[-1]
    assert isinstance(close, Close) and close.error is not None
    assert "standard_conforming_strings must stay on" in close.error.message
    assert pb.session.closed


def test_safe_parameter_changes_pass_through() -> None:
    pb = Playbook()
    pb.client(query("set client_encoding to sql_ascii"))
    reply = command_complete("SET") + parameter_status("client_encoding", "SQL_ASCII")
    assert pb.server(reply + ready_for_query()) == [
        "finish 'set client_encoding to sql_ascii' rows=0 SET",
        "client C S Z:I",
    ]
    assert not pb.session.closed


def test_terminate_closes() -> None:
    pb = Playbook()
    assert pb.client(TERMINATE) == ["server X", "close"]
    assert pb.session.closed


def test_client_protocol_violations_close_the_session() -> None:
    pb = Playbook()
    assert pb.client(ready_for_query()) == ["close 08P01"]
    pb = Playbook()
    pb.session._client.max_size = 100
    assert pb.client(query("x" * 200)) == ["close 08P01"]
    pb = Playbook()
    assert pb.client(frame(b"D", b"X")) == ["close 08P01"]


def test_interrupted_audits_what_is_outstanding() -> None:
    pb = Playbook()
    pb.client(extended("select pg_sleep(10)") + SYNC)
    out = pb.session.interrupted("interrupted")
    assert [s.error for s in finishes(out)] == ["interrupted"]
    assert not pb.session.queue and pb.session.closed
    assert not [a for a in out if isinstance(a, ToClient)]


def test_function_call_is_audited_once_on_its_result() -> None:
    pb = Playbook()
    call = frame(b"F", b"\0\0\x03\xe8" + b"\0\0" + b"\0\0" + b"\0\0")
    assert pb.client(call) == ["decide '<function call oid=1000>'", "server F"]
    result = frame(b"V", b"\xff\xff\xff\xff")
    assert pb.server(result + ready_for_query()) == [
        "finish '<function call oid=1000>' rows=0",
        "client V Z:I",
    ]


def test_function_call_refused_by_the_hooks() -> None:
    pb = Playbook(lambda sql, ext: Admission(action="block", error=Blocked("fastpath", "no")))
    call = frame(b"F", b"\0\0\x03\xe8" + b"\0\0" + b"\0\0" + b"\0\0")
    assert pb.client(call) == ["decide '<function call oid=1000>'", "server Q"]
    assert pb.server(error("42601") + ready_for_query()) == [
        "finish '<function call oid=1000>' rows=0 error=42501",
        "client E:42501 Z:I",
    ]
    assert not pb.session.queue


def test_extended_copy_in_failing_on_the_server_side() -> None:
    pb = Playbook()
    pb.client(extended("copy t from stdin") + SYNC)
    pb.server(PARSE_COMPLETE + BIND_COMPLETE + NO_DATA + copy_response(b"G"))
    pb.client(copy_data(b"oops\n"))
    # Bad data: the upstream leaves COPY and ignores messages until Sync.
    assert pb.server(error("22P02")) == [
        "finish 'copy t from stdin' rows=0 error=22P02",
        "client E:22P02",
    ]
    assert pb.client(copy_data(b"2\n") + CLIENT_COPY_DONE + SYNC) == ["server S"]
    assert pb.server(ready_for_query()) == ["client Z:I"]
    assert not pb.session.queue


def test_byte_cap_cuts_on_wire_bytes() -> None:
    limits = StreamLimits(max_bytes=40, rule="bytes-cap")
    pb = Playbook(lambda sql, ext: Admission(limits=limits))
    pb.client(query("select blob from t"))
    row = data_row("x" * 20)  # 31 bytes on the wire
    assert pb.server(row_description("blob") + row * 2) == ["client T D", "cancel"]
    sent = pb.raw(error("57014") + ready_for_query())
    assert b"result limit of 40 bytes reached (bytes-cap)" in sent


def test_cap_counts_rows_already_fetched_by_earlier_statements() -> None:
    # FETCH loops on one cursor: the hooks say 8 rows were already streamed.
    limits = StreamLimits(max_rows=10, rule="cap", used_rows=8)
    pb = Playbook(lambda sql, ext: Admission(limits=limits))
    pb.client(query("fetch 5 from c"))
    assert pb.server(row_description("n") + rows("1", "2", "3")) == ["client T D*2", "cancel"]
    assert pb.server(error("57014") + ready_for_query(b"T")) == [
        "finish 'fetch 5 from c' rows=2 cutoff error=54000",
        "client E:54000 Z:T",
    ]


def test_search_path_follows_a_successful_set() -> None:
    change = Change("set", "search_path", ("sales", "public"))
    adm = Admission(statements=[{"search_path": ["sales", "public"]}], changes={0: change})
    pb = Playbook(lambda sql, ext: adm)
    pb.client(query("set search_path = sales, public"))
    pb.server(error("42501") + ready_for_query())
    assert pb.session.facts.search_path == ("$user", "public")
    pb.client(query("set search_path = sales, public"))
    pb.server(command_complete("SET") + ready_for_query())
    assert pb.session.facts.search_path == ("sales", "public")


def test_refused_asyncpg_prepare_answers_at_once_then_waits_for_sync() -> None:
    pb = Playbook(policy(blocked=("secret",)))
    assert pb.client(parse("__asyncpg_stmt_2__", "select secret") + describe(b"S") + FLUSH) == [
        "decide 'select secret'",
        "server E",
    ]
    # PostgreSQL flushes an ErrorResponse at once, Flush or not.
    assert pb.server(error("34000")) == [
        "finish 'select secret' rows=0 error=42501",
        "client E:42501",
    ]
    assert "__asyncpg_stmt_2__" not in pb.session.statements
    assert pb.client(SYNC) == ["server S"]
    assert pb.server(ready_for_query()) == ["client Z:I"]


# ---------------------------------------------------------------- pipelines, generated

ok_or_fail = st.one_of(
    st.tuples(st.just("ok"), st.integers(min_value=0, max_value=3)),
    st.just(("error", 0)),
    st.just(("block", 0)),
)
units = st.lists(
    st.tuples(st.booleans(), st.lists(ok_or_fail, min_size=1, max_size=4)), min_size=1, max_size=6
)


def reply_rows(n: int) -> tuple[bytes, list[str]]:
    data = row_description("a") + rows(*["x"] * n) + command_complete(f"SELECT {n}")
    return data, ["T", *["D"] * n, "C"]


@settings(max_examples=80, deadline=None)
@given(units, st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=20))
def test_generated_pipelines_stay_in_step(
    plan: list[tuple[bool, list[tuple[str, int]]]], chunks: list[int]
) -> None:
    """Any mix of queries and extended batches, some refused, some failing upstream,
    sent as one pipeline and answered in arbitrary chunks: the client sees exactly
    PostgreSQL's replies with refusals in place, and every decided statement is audited once."""
    client, server = b"", b""
    expect: list[str] = []
    audited = 0
    for i, (simple, outcomes) in enumerate(plan):
        if simple:
            kind, n = outcomes[0]
            client += query(f"select {i} {kind}" + (" secret" if kind == "block" else ""))
            audited += 1
            if kind == "block":
                server += error("42601") + ready_for_query()  # the stand-in's syntax error
                expect += ["E:42501", "Z:I"]
                continue
            if kind == "error":
                server += error("22012")
                expect.append("E:22012")
            else:
                data, toks = reply_rows(n)
                server += data
                expect += toks
            server += ready_for_query()
            expect.append("Z:I")
            continue
        failed = refused = False
        for j, (kind, n) in enumerate(outcomes):
            client += extended(f"select {i}.{j} {kind}" + (" secret" if kind == "block" else ""))
            if refused:
                continue  # discarded by the session until Sync: never decided
            audited += 1
            if kind == "block":
                refused = True
                if not failed:  # else the upstream skips the stand-in too
                    server += error("34000")
                    expect.append("E:42501")
                failed = True
            elif failed:
                continue
            elif kind == "error":
                server += PARSE_COMPLETE + BIND_COMPLETE + NO_DATA + error("22012")
                expect += ["1", "2", "n", "E:22012"]
                failed = True
            else:
                data, toks = reply_rows(n)
                server += PARSE_COMPLETE + BIND_COMPLETE + data
                expect += ["1", "2", *toks]
        client += SYNC
        server += ready_for_query()
        expect.append("Z:I")

    pb = Playbook(policy(blocked=("secret",)))
    sent = b""
    for part in _chunked(client, chunks):
        sent += pb.replies(part)  # nothing: refusals come with the upstream's replies
    for part in _chunked(server, chunks[::-1]):
        sent += pb.raw(part)
    assert tokens(sent) == expect
    assert len(finishes(pb.actions)) == audited
    assert not pb.session.queue and not pb.session._discard


def _chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(data):
        out.append(data[pos : pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    return out


def test_parse_hands_its_declared_parameter_types_to_the_hooks() -> None:
    """The policy engine copies `col = $1` below a row filter only for some types."""
    session = Session(SessionFacts(user="alice", database="db"))
    asked = session.client_data(parse_message("", "SELECT $1, $2", (20, 0)))
    assert asked == [Decide("SELECT $1, $2", extended=True, param_types=(20, 0))]
