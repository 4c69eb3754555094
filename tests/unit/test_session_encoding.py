"""The session follows client_encoding as the server applies it (sans-IO, see playbook.py)."""

from __future__ import annotations

from playbook import (
    SYNC,
    Playbook,
    bind,
    command_complete,
    execute,
    parameter_status,
    parse,
    query,
    ready_for_query,
    select,
)

from proxy import messages as m
from proxy.actions import ToServer
from proxy.wire import frame

SET_SJIS = "SET client_encoding TO 'SJIS'"
SET_DONE = command_complete("SET") + parameter_status("client_encoding", "SJIS")


def sjis(sql: str) -> bytes:
    return m.query(sql.encode("cp932"))


def test_text_behind_a_change_waits_for_its_ready_for_query_then_reads_in_the_new_encoding() -> (
    None
):
    pb = Playbook()
    pb.session.parameters.update(client_encoding="UTF8", server_encoding="UTF8")
    assert pb.client(query(SET_SJIS) + sjis("SELECT '表'")) == [
        f"decide {SET_SJIS!r}",
        "server Q",
    ]
    assert pb.server(SET_DONE + ready_for_query()) == [
        f"finish {SET_SJIS!r} rows=0 SET",
        "client C S Z:I",
        "decide \"SELECT '表'\"",
        "server Q",
    ]
    sent = [a.data for a in pb.actions if isinstance(a, ToServer)]
    assert sent[-1] == sjis("SELECT '表'")  # forwarded in the client's bytes
    assert pb.session.text.name == "SJIS"


def test_text_in_the_same_batch_after_a_change_is_refused() -> None:
    pb = Playbook()
    pb.session.parameters.update(client_encoding="UTF8", server_encoding="UTF8")
    batch = parse("", SET_SJIS) + bind() + execute() + parse("", "SELECT 1") + bind() + execute()
    # The second Parse goes nowhere: a sure-to-fail Execute stands in for it.
    assert pb.client(batch + SYNC) == [f"decide {SET_SJIS!r}", "server P B E*2 S"]
    reply = frame(b"1") + frame(b"2") + SET_DONE + m.error_response({"C": "34000"})
    assert pb.server(reply + ready_for_query()) == [
        "client 1 2",
        f"finish {SET_SJIS!r} rows=0 SET",
        "client C S",
        "finish 'SELECT 1' rows=0 error=0A000",
        "client E:0A000 Z:I",
    ]


def test_invalid_bytes_are_refused_with_22021_and_the_session_goes_on() -> None:
    pb = Playbook()
    pb.session.parameters.update(client_encoding="SJIS", server_encoding="UTF8")
    assert pb.client(m.query(b"SELECT '\x82\x27'")) == ["server Q"]  # the stand-in
    assert pb.server(m.error_response({"C": "42601"}) + ready_for_query()) == [
        "finish \"SELECT '\ufffd''\" rows=0 error=22021",
        "client E:22021 Z:I",
    ]
    assert pb.client(sjis("SELECT 1"))[-1] == "server Q"
    assert pb.server(select(1)) == [
        "client T D",
        "finish 'SELECT 1' rows=1 SELECT 1",
        "client C Z:I",
    ]


def test_an_unforeseen_change_closes_the_session() -> None:
    pb = Playbook()
    pb.session.parameters.update(client_encoding="UTF8", server_encoding="UTF8")
    pb.client(query("SELECT my_function()"))
    out = pb.server(command_complete("SELECT 1") + parameter_status("client_encoding", "LATIN1"))
    assert out[-1] == "close 0A000"
