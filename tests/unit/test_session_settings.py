"""The session's search_path follows the server's through transactions (issue #12).

The playbook's hooks read each statement's Change with the engine's parser,
as the Enforcer hands it over in the statement info.
"""

from __future__ import annotations

from dataclasses import replace

from playbook import (
    SYNC,
    Playbook,
    bind,
    command_complete,
    error,
    execute,
    parse,
    query,
    ready_for_query,
    row_description,
    rows,
)

from proxy.errors import Blocked
from proxy.gucs import Change
from proxy.hooks import Admission, StreamLimits
from proxy.policy.changes import statement_change
from proxy.policy.kinds import head
from proxy.policy.split import split
from proxy.wire import frame

START: tuple[str, ...] = ("$user", "public")
PARSE_COMPLETE, BIND_COMPLETE = frame(b"1"), frame(b"2")


def changes(sql: str, extended: bool) -> Admission:
    infos: list[dict[str, object]] = []
    found: dict[int, Change] = {}
    for i, piece in enumerate(split(sql)):
        infos.append({})
        c = statement_change(head(piece), piece)
        if c is not None:
            found[i] = c
    return Admission(statements=infos, changes=found)


def replies(*tags: str, status: bytes = b"I") -> bytes:
    return b"".join(command_complete(t) for t in tags) + ready_for_query(status)


def test_a_rolled_back_set_leaves_the_path_as_it_was() -> None:
    pb = Playbook(changes)
    pb.client(query("begin; set search_path = x; rollback"))
    pb.server(replies("BEGIN", "SET", "ROLLBACK"))
    assert pb.session.facts.search_path == START


def test_a_set_is_in_force_inside_its_block_and_kept_by_commit() -> None:
    pb = Playbook(changes)
    pb.client(query("begin; set search_path = x"))
    pb.server(replies("BEGIN", "SET", status=b"T"))
    assert pb.session.facts.search_path == ("x",)
    pb.client(query("commit"))
    pb.server(replies("COMMIT"))
    assert pb.session.facts.search_path == ("x",)


def test_set_local_ends_with_its_transaction() -> None:
    pb = Playbook(changes)
    pb.client(query("begin; set local search_path = x"))
    pb.server(replies("BEGIN", "SET", status=b"T"))
    assert pb.session.facts.search_path == ("x",)
    pb.client(query("commit"))
    pb.server(replies("COMMIT"))
    assert pb.session.facts.search_path == START


def test_a_failed_statement_of_the_string_rolls_back_its_set() -> None:
    pb = Playbook(changes)
    pb.client(query("set search_path = x; select 1/0"))
    pb.server(command_complete("SET") + error("22012") + ready_for_query())
    assert pb.session.facts.search_path == START


def test_an_extended_batch_error_before_sync_rolls_back_its_set() -> None:
    pb = Playbook(changes)
    batch = parse("", "set search_path = x") + bind() + execute()
    batch += parse("", "select 1/0") + bind() + execute() + SYNC
    pb.client(batch)
    pb.server(PARSE_COMPLETE + BIND_COMPLETE + command_complete("SET"))
    assert pb.session.facts.search_path == ("x",)  # in force until the batch ends
    pb.server(PARSE_COMPLETE + BIND_COMPLETE + error("22012") + ready_for_query())
    assert pb.session.facts.search_path == START


def test_a_refusal_in_a_block_fails_it_and_its_set_goes_at_rollback() -> None:
    refuse = Admission(error=Blocked("r", "no"))
    pb = Playbook(lambda sql, ext: refuse if "secret" in sql else changes(sql, ext))
    pb.client(query("begin; set search_path = x"))
    pb.server(replies("BEGIN", "SET", status=b"T"))
    pb.client(query("select secret"))
    pb.server(error("42601") + ready_for_query(b"E"))  # the stand-in's syntax error
    pb.client(query("commit"))
    pb.server(replies("ROLLBACK"))  # COMMIT of a failed block
    assert pb.session.facts.search_path == START


def test_rollback_to_savepoint_and_reset_follow_the_server() -> None:
    pb = Playbook(changes)
    pb.client(query("set search_path = y"))
    pb.server(replies("SET"))
    pb.client(query("begin; savepoint a; set search_path = x; rollback to savepoint a"))
    pb.server(replies("BEGIN", "SAVEPOINT", "SET", "ROLLBACK", status=b"T"))
    assert pb.session.facts.search_path == ("y",)
    pb.client(query("commit; reset search_path"))
    pb.server(replies("COMMIT", "RESET"))
    assert pb.session.facts.search_path == START


def test_a_path_the_proxy_cannot_follow_is_marked_unknown_until_set() -> None:
    unknown = Change("unknown", "search_path")
    pb = Playbook(lambda sql, ext: Admission(statements=[{}], changes={0: unknown}))
    pb.client(query("select set_config('search_path', current_user, false)"))
    pb.server(replies("SELECT 1"))
    assert not pb.session.facts.search_path_known
    pb.policy = changes
    pb.client(query("set search_path = x"))
    pb.server(replies("SET"))
    assert pb.session.facts.search_path_known and pb.session.facts.search_path == ("x",)


def test_a_fast_path_call_leaves_the_path_unknown() -> None:
    pb = Playbook(changes)
    call = frame(b"F", b"\0\0\x03\xe8" + b"\0\0" + b"\0\0" + b"\0\0")
    pb.client(call)
    pb.server(frame(b"V", b"\xff\xff\xff\xff") + ready_for_query())
    assert not pb.session.facts.search_path_known


def capped(sql: str, ext: bool) -> Admission:
    adm = changes(sql, ext)
    if "big" in sql:
        adm = replace(adm, limits=StreamLimits(max_rows=1, rule="cap"))
    return adm


def test_a_set_after_a_cut_off_statement_of_the_string_still_counts() -> None:
    sql = "select n from big; set search_path = x"
    pb = Playbook(capped)
    pb.client(query(sql))
    # The cancel came too late: the SET ran, its completion is dropped, not ignored.
    reply = row_description("n") + rows("1", "2") + command_complete("SELECT 2")
    pb.server(reply + command_complete("SET") + ready_for_query())
    assert pb.session.facts.search_path == ("x",)


def test_a_set_later_in_a_cut_off_batch_leaves_the_path_unknown() -> None:
    batch = parse("", "select n from big") + bind() + execute()
    batch += parse("", "set search_path = x") + bind() + execute() + SYNC
    head = PARSE_COMPLETE + BIND_COMPLETE + row_description("n") + rows("1", "2")
    # The cancel came too late: the SET ran, but its completion is drained unseen.
    pb = Playbook(capped)
    pb.client(batch)
    pb.server(head + command_complete("SELECT 2"))
    assert not pb.session.facts.search_path_known
    pb.server(PARSE_COMPLETE + BIND_COMPLETE + command_complete("SET") + ready_for_query())
    assert not pb.session.facts.search_path_known
    # The cancel hit: the batch's implicit transaction rolled back, the path is known.
    pb = Playbook(capped)
    pb.client(batch)
    pb.server(head + error("57014") + ready_for_query())
    assert pb.session.facts.search_path_known and pb.session.facts.search_path == START


def test_a_cut_off_batch_without_a_set_leaves_the_path_known() -> None:
    pb = Playbook(capped)
    pb.client(parse("", "select n from big") + bind() + execute() + SYNC)
    pb.server(PARSE_COMPLETE + BIND_COMPLETE + row_description("n") + rows("1", "2"))
    pb.server(command_complete("SELECT 2") + ready_for_query())
    assert pb.session.facts.search_path_known
