"""The client-encoding table and the session's tracking of client_encoding (no server)."""

from __future__ import annotations

import pytest

from proxy.encodings import (
    BY_NAME,
    RAW,
    SUPPORTED,
    UNSUPPORTED,
    EncodingError,
    InvalidByteSequence,
    canonical,
    lookup,
    refusal,
)
from proxy.textmode import parser_hazard
from proxy.transcode import TextCodec, may_change


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("UTF-8", "UTF8"),
        ("unicode", "UTF8"),
        ("Shift_JIS", "SJIS"),
        ("ms-kanji", "SJIS"),
        ("windows-1252", "WIN1252"),
        ("iso_8859-15", "LATIN9"),
        ("ISO-8859-9", "LATIN5"),
        ("cp-936", None),
        ("win936", "GBK"),
        ("koi8", "KOI8R"),
        ("sql-ascii", "SQL_ASCII"),
        ("tcvn5712", "WIN1258"),
        ("nonsense", None),
    ],
)
def test_names_are_normalized_as_postgresql_does(given: str, name: str | None) -> None:
    assert canonical(given) == name


def test_supported_and_unsupported_cover_every_client_encoding() -> None:
    assert set(SUPPORTED) == {"SQL_ASCII", *BY_NAME}
    assert len(SUPPORTED) + len(UNSUPPORTED) == 42  # PostgreSQL's client encodings
    assert not set(SUPPORTED) & set(UNSUPPORTED)


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_ones_are_refused_with_the_list(name: str) -> None:
    why = refusal(name.lower())
    assert why is not None and why.startswith(f"client_encoding {name} is not supported")
    assert "SJIS" in why and "WIN1252" in why
    assert parser_hazard("client_encoding", f"'{name}'") == why
    assert parser_hazard("names", name) == why


def test_supported_ones_and_unknown_names_pass() -> None:
    assert refusal("win1250") is None and refusal("EUC_JP") is None
    assert refusal("DEFAULT") is None  # the server reports what it stands for
    why = refusal("no_such_encoding")  # unknown to the proxy: refused too
    assert why is not None and why.startswith("client_encoding 'no_such_encoding' is not")
    assert parser_hazard("standard_conforming_strings", "off") is not None


def test_sql_ascii_reads_in_the_server_encoding() -> None:
    assert lookup("SQL_ASCII", "UTF8") is BY_NAME["UTF8"]
    assert lookup("SQL_ASCII", "LATIN1") is BY_NAME["LATIN1"]
    assert lookup("SQL_ASCII", "SQL_ASCII") is RAW
    assert lookup("SQL_ASCII", "EUC_TW") is None
    assert RAW.encode(RAW.decode(b"caf\xe9")) == b"caf\xe9"


@pytest.mark.parametrize("name", list(BY_NAME))
def test_what_is_decoded_encodes_back_to_text_read_the_same(name: str) -> None:
    enc = BY_NAME[name]
    seqs = [bytes([b]) for b in range(1, 256)]
    seqs += [bytes([a, b]) for a in range(0x81, 0xFF) for b in range(0x40, 0xFF)]
    for seq in seqs:
        try:
            text = enc.decode(seq)
        except EncodingError:
            continue
        assert enc.decode(enc.encode(text)) == text, (name, seq.hex())


def test_invalid_bytes_in_postgresqls_words() -> None:
    with pytest.raises(InvalidByteSequence) as e:
        BY_NAME["SJIS"].decode(b"SELECT '\x82\x27'")
    assert e.value.sqlstate == "22021"
    assert e.value.message == 'invalid byte sequence for encoding "SJIS": 0x82 0x27'


def test_euc_jp_reads_the_seven_as_the_server_and_refuses_pythons_own() -> None:
    enc = BY_NAME["EUC_JP"]
    assert enc.decode(b"\xa1\xc1") == "\uff5e"  # FULLWIDTH TILDE, as PostgreSQL
    assert enc.encode("\uff5e") == b"\xa1\xc1"
    with pytest.raises(UnicodeEncodeError):
        enc.encode("\u301c")  # WAVE DASH: the server would read it back as U+FF5E
    assert enc.write("\u301cx") == b"?x"


@pytest.mark.parametrize(
    ("sql", "changes"),
    [
        ("SET client_encoding TO 'SJIS'", True),
        ("set names 'latin1'", True),
        ("SET /* */ NAMES 'x'", True),
        ("RESET ALL", True),
        ("DISCARD ALL", True),
        ("SELECT set_config('a.b', '1', false)", True),
        ("EXECUTE p", True),
        ('SET U&"\\0063lient_encoding" TO x', True),
        ("SELECT names FROM t", False),
        ("SELECT current_setting('search_path')", False),
        ("UPDATE t SET a = 1", False),
    ],
)
def test_what_may_change_the_encoding(sql: str, changes: bool) -> None:
    assert may_change(sql) is changes


@pytest.mark.parametrize(
    ("sql", "kinds", "changes"),
    [
        ("SELECT 'what to do', 'reset'", ("select",), False),
        ("INSERT INTO t VALUES ('execute order 66')", ("insert",), False),
        ("SET LOCAL app.user = 'x'", ("set",), False),
        ("SET search_path TO a; SELECT 1", ("set", "select"), False),
        ("SET NAMES 'LATIN1'", ("set",), True),
        ("RESET ALL", ("set",), True),
        ("SET client_encoding = DEFAULT", ("set",), True),
        ("SELECT set_config('app.x', '1', false)", ("select",), True),
        ("DO $$ BEGIN EXECUTE 'SET ' || 'names x'; END $$", ("do",), True),
        ("CALL p()", ("call",), True),
        ("EXECUTE stmt", ("execute",), True),
        ("DISCARD ALL", ("discard",), True),
        ("whatever this is", ("unknown",), True),
        ("SELECT 1", (None,), False),  # unclassified: judged on its words
        ("SELECT 1; DISCARD ALL", ("select", None), True),
    ],
)
def test_what_may_change_the_encoding_given_the_statement_kinds(
    sql: str, kinds: tuple[str | None, ...], changes: bool
) -> None:
    assert may_change(sql, kinds) is changes


def test_text_codec_holds_until_the_ready_for_query_that_settles_a_change() -> None:
    params = {"client_encoding": "UTF8", "server_encoding": "UTF8"}
    tc = TextCodec(params)
    assert tc.name == "UTF8" and not tc.uncertain
    tc.forwarded(b"Q", "SELECT 1")
    assert not tc.uncertain
    tc.forwarded(b"Q", "SET client_encoding TO 'SJIS'")
    assert tc.uncertain and tc.resolving
    assert tc.ready(b"I") is None
    assert tc.uncertain  # that was the first query's ReadyForQuery
    params["client_encoding"] = "SJIS"
    assert tc.reported("client_encoding", "SJIS") is None
    assert tc.ready(b"I") is None
    assert not tc.uncertain and tc.name == "SJIS"


def test_an_extended_change_is_unsettled_until_sync() -> None:
    tc = TextCodec({"client_encoding": "UTF8", "server_encoding": "UTF8"})
    tc.forwarded(b"E", "SET NAMES 'LATIN1'")
    assert tc.uncertain and not tc.resolving  # the Sync is still to come
    tc.forwarded(b"S")
    assert tc.resolving


def test_a_change_inside_a_block_keeps_every_statement_unsettled() -> None:
    tc = TextCodec({"client_encoding": "UTF8", "server_encoding": "UTF8"})
    tc.forwarded(b"Q", "SET client_encoding TO 'LATIN1'")
    tc.ready(b"T")
    tc.forwarded(b"Q", "SELECT 1")  # may fail and undo the SET
    assert tc.uncertain
    tc.ready(b"T")
    tc.forwarded(b"Q", "COMMIT")
    tc.ready(b"I")
    tc.forwarded(b"Q", "SELECT 1")
    assert not tc.uncertain


def test_an_unforeseen_change_ends_the_session() -> None:
    params = {"client_encoding": "UTF8", "server_encoding": "UTF8"}
    tc = TextCodec(params)
    assert tc.name == "UTF8"
    params["client_encoding"] = "LATIN1"
    why = tc.reported("client_encoding", "LATIN1")
    assert why is not None and "cannot follow" in why
    params["client_encoding"] = "SQL_ASCII"  # the same reading on a UTF8 database
    assert tc.reported("client_encoding", "SQL_ASCII") is None


def test_a_change_reported_for_a_cycle_before_the_first_foreseen_one_ends_the_session() -> None:
    params = {"client_encoding": "UTF8", "server_encoding": "UTF8"}
    tc = TextCodec(params)
    assert tc.name == "UTF8"
    tc.forwarded(b"Q", "SELECT f()", (None,))  # changes it, unforeseeably
    tc.forwarded(b"Q", "SET client_encoding TO 'LATIN1'")  # read in UTF8 meanwhile
    assert tc.uncertain
    params["client_encoding"] = "LATIN1"
    why = tc.reported("client_encoding", "LATIN1")  # in the first query's replies
    assert why is not None and "cannot follow" in why
