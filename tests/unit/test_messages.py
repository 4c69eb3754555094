"""Message codec: every encoder/decoder pair round-trips, and decoders fail only cleanly.

A decoder facing a truncated or garbled body must raise ProtocolViolation
(the session turns it into a FATAL 08P01), never IndexError or struct.error.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from playbook import bind, close, describe, execute

from proxy import messages as m
from proxy.errors import ProtocolViolation
from proxy.wire import Frame, FrameReader

# Text as it can cross the wire in a C string: any Unicode but NUL and lone surrogates.
text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"))
name = text.filter(bool)
i32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)


def one_frame(data: bytes) -> Frame:
    r = FrameReader()
    r.feed(data)
    frames = list(r)
    assert len(frames) == 1 and r.pending() == 0
    return frames[0]


# ---------------------------------------------------------------- startup phase


@given(st.dictionaries(name, text, max_size=8), st.integers(min_value=0, max_value=0xFFFF))
def test_startup_message_round_trip(params: dict[str, str], minor: int) -> None:
    version = 3 << 16 | minor
    packet = m.startup_message(params, version)
    assert struct.unpack("!I", packet[:4])[0] == len(packet)
    msg = m.parse_startup(packet)
    assert msg == m.StartupMessage(version, params)
    assert isinstance(msg, m.StartupMessage) and (msg.major, msg.minor) == (3, minor)


@given(i32, st.binary(min_size=4, max_size=256))
def test_cancel_request_round_trip(pid: int, key: bytes) -> None:
    assert m.parse_startup(m.cancel_request(pid, key)) == m.CancelRequest(pid, key)


@pytest.mark.parametrize("size", [0, 3, 257])
def test_cancel_request_key_size_is_checked(size: int) -> None:
    with pytest.raises(ProtocolViolation, match="cancel request key"):
        m.parse_startup(m.cancel_request(1, b"k" * size))


def test_ssl_and_gssenc_requests() -> None:
    assert m.parse_startup(m.SSL_REQUEST_BYTES) == m.SSLRequest()
    gss = struct.pack("!II", 8, m.GSSENC_REQUEST)
    assert m.parse_startup(gss) == m.GSSENCRequest()


@pytest.mark.parametrize("version", [2 << 16, 4 << 16, m.SSL_REQUEST])
def test_unsupported_protocol_versions(version: int) -> None:
    # An SSLRequest code with extra bytes is no SSLRequest either.
    body = struct.pack("!I", version) + b"user\0x\0\0"
    with pytest.raises(ProtocolViolation, match="unsupported frontend protocol"):
        m.parse_startup(struct.pack("!I", len(body) + 4) + body)


@given(st.integers(min_value=0, max_value=0xFFFF), st.lists(name, max_size=5))
def test_negotiate_protocol_version_round_trip(minor: int, options: list[str]) -> None:
    f = one_frame(m.negotiate_protocol_version(minor, options))
    assert f.type == b"v"
    r = m.Reader(f.body)
    assert r.i32() == minor
    assert [r.cstr() for _ in range(r.i32())] == options
    assert r.pos == len(f.body)


# ---------------------------------------------------------------- authentication


@given(i32, st.binary(max_size=100))
def test_auth_request_round_trip(code: int, data: bytes) -> None:
    f = one_frame(m.auth_request(code, data))
    assert f.type == b"R"
    assert m.parse_auth(f.body) == (code, data)


@given(st.lists(name, max_size=4))
def test_auth_sasl_round_trip(mechanisms: list[str]) -> None:
    code, data = m.parse_auth(one_frame(m.auth_sasl(mechanisms)).body)
    assert code == m.AUTH_SASL
    assert m.parse_sasl_mechanisms(data) == mechanisms


@given(text)
def test_password_message_round_trip(password: str) -> None:
    f = one_frame(m.password_message(m.cstr(password)))
    assert f.type == b"p" and m.parse_password(f.body) == password


@given(name, st.binary(max_size=200))
def test_sasl_initial_response_round_trip(mechanism: str, data: bytes) -> None:
    r = m.Reader(one_frame(m.sasl_initial_response(mechanism, data)).body)
    assert r.cstr() == mechanism
    assert r.take(r.i32()) == data
    assert r.pos == len(r.data)


@given(i32, st.binary(min_size=4, max_size=256))
def test_backend_key_data_round_trip(pid: int, key: bytes) -> None:
    f = one_frame(m.backend_key_data(pid, key))
    assert f.type == b"K" and m.parse_backend_key_data(f.body) == (pid, key)


@given(name, text)
def test_parameter_status_decodes(key: str, value: str) -> None:
    assert m.parse_parameter_status(m.cstr(key) + m.cstr(value)) == (key, value)


# ---------------------------------------------------------------- queries


@given(text)
def test_query_round_trip(sql: str) -> None:
    f = one_frame(m.query(sql))
    assert f.type == b"Q" and m.parse_query(f.body) == sql


@given(text, text, st.lists(st.integers(min_value=0, max_value=2**32 - 1), max_size=20))
def test_parse_round_trip(stmt: str, sql: str, types: list[int]) -> None:
    raw = m.parse(stmt, sql, tuple(types))
    f = one_frame(raw)
    assert f.type == b"P"
    p = m.parse_parse(f.body)
    assert p == m.Parse(stmt, sql, tuple(types))
    # The session re-encodes a Parse it did not rewrite: byte for byte the same.
    assert m.parse(p.name, p.sql, p.param_types) == raw


def test_parse_keeps_high_type_oids() -> None:
    # OIDs are unsigned: user types past 2**31 exist in long-lived clusters.
    raw = m.parse("", "select $1", (3_000_000_000,))
    assert m.parse_parse(one_frame(raw).body).param_types == (3_000_000_000,)


def test_parse_negative_parameter_count() -> None:
    with pytest.raises(ProtocolViolation, match="negative parameter count"):
        m.parse_parse(b"\0select 1\0\xff\xff")


@given(text, text, st.lists(text, max_size=5))
def test_bind_names(portal: str, stmt: str, params: list[str]) -> None:
    f = one_frame(bind(portal, stmt, *params))
    assert m.parse_bind_names(f.body) == (portal, stmt)


@given(text, i32)
def test_execute_round_trip(portal: str, max_rows: int) -> None:
    f = one_frame(execute(portal, max_rows))
    assert m.parse_execute(f.body) == (portal, max_rows)


@given(st.sampled_from([b"S", b"P"]), text, st.sampled_from([describe, close]))
def test_describe_and_close_targets(
    kind: bytes, target: str, build: Callable[[bytes, str], bytes]
) -> None:
    assert m.parse_target(one_frame(build(kind, target)).body) == (kind, target)


def test_describe_with_an_invalid_kind() -> None:
    with pytest.raises(ProtocolViolation, match="invalid Describe/Close target"):
        m.parse_target(b"X\0")


@given(st.sampled_from([b"I", b"T", b"E"]))
def test_ready_for_query(status: bytes) -> None:
    assert one_frame(m.ready_for_query(status)) == Frame(b"Z", status)


@given(text)
def test_command_complete(tag: str) -> None:
    f = one_frame(m.command_complete(tag))
    assert f.type == b"C" and m.Reader(f.body).cstr() == tag


# ---------------------------------------------------------------- errors and notices


field_code = st.characters(min_codepoint=ord("A"), max_codepoint=ord("z")).filter(str.isalpha)


@given(st.dictionaries(field_code, text, max_size=10), st.booleans())
def test_error_response_round_trip(fields: dict[str, str], notice: bool) -> None:
    f = one_frame(m.error_response(fields, notice=notice))
    assert f.type == (b"N" if notice else b"E")
    assert m.error_fields(f.body) == fields


def test_error_fields_tolerate_a_missing_terminator_and_bad_utf8() -> None:
    assert m.error_fields(b"SERROR\0C42501\0Mno") == {"S": "ERROR", "C": "42501", "M": "no"}
    assert m.error_fields(b"M\xff\xfe\0") == {"M": "\ufffd\ufffd"}
    assert m.error_fields(b"") == {}
    assert m.error_fields(b"S") == {"S": ""}


@given(st.binary(max_size=300))
def test_error_fields_never_raise(body: bytes) -> None:
    assert isinstance(m.error_fields(body), dict)


def test_proxy_errors_are_well_formed() -> None:
    from proxy.errors import Blocked, ResultLimit

    for err in (Blocked("r1", "no"), ResultLimit(10, "cap")):
        fields = m.error_fields(one_frame(m.error_response(err.fields())).body)
        assert fields["S"] == fields["V"] == "ERROR"
        assert fields["C"] == err.sqlstate and fields["M"].startswith("oversight: ")


# ---------------------------------------------------------------- defensive decoding

DECODERS: list[Callable[[bytes], object]] = [
    m.parse_startup,
    m.parse_auth,
    m.parse_sasl_mechanisms,
    m.parse_password,
    m.parse_backend_key_data,
    m.parse_parameter_status,
    m.parse_query,
    m.parse_parse,
    m.parse_bind_names,
    m.parse_execute,
    m.parse_target,
]

VALID: list[tuple[Callable[[bytes], object], bytes]] = [
    (m.parse_startup, m.startup_message({"user": "alice", "database": "db"})),
    (m.parse_startup, m.cancel_request(7, b"abcd")),
    (m.parse_auth, one_frame(m.auth_sasl(["SCRAM-SHA-256"])).body),
    (m.parse_backend_key_data, one_frame(m.backend_key_data(7, b"abcd")).body),
    (m.parse_parameter_status, b"TimeZone\0UTC\0"),
    (m.parse_query, one_frame(m.query("select 1")).body),
    (m.parse_parse, one_frame(m.parse("s", "select $1, $2", (23, 25))).body),
    (m.parse_bind_names, one_frame(bind("p", "s", "1")).body),
    (m.parse_execute, one_frame(execute("p", 5)).body),
    (m.parse_target, one_frame(describe(b"S", "s")).body),
]


@pytest.mark.parametrize(("decode", "body"), VALID, ids=lambda v: getattr(v, "__name__", ""))
def test_every_truncation_of_a_valid_body_fails_cleanly(
    decode: Callable[[bytes], object], body: bytes
) -> None:
    decode(body)
    for cut in range(len(body)):
        with contextlib.suppress(ProtocolViolation):
            decode(body[:cut])


@pytest.mark.parametrize("decode", DECODERS, ids=lambda d: d.__name__)
@given(data=st.binary(max_size=64))
def test_garbage_fails_only_with_protocol_violation(
    decode: Callable[[bytes], object], data: bytes
) -> None:
    with contextlib.suppress(ProtocolViolation):
        decode(data)


@pytest.mark.parametrize(
    ("decode", "body"),
    [
        (m.parse_startup, b"\0\0\0\x08\0\x03"),
        (m.parse_startup, m.startup_message({"user": "a"})[:-1]),
        (m.parse_parse, b"s\0select\0\0\x02\0\0\0\x17"),
        (m.parse_execute, b"p\0\0\0"),
        (m.parse_target, b""),
        (m.parse_auth, b"\0\0"),
        (m.parse_query, b"select 1"),
        (m.parse_sasl_mechanisms, b"SCRAM-SHA-256"),
    ],
)
def test_specific_truncations_raise_protocol_violation(
    decode: Callable[[bytes], object], body: bytes
) -> None:
    with pytest.raises(ProtocolViolation):
        decode(body)


def test_reader_take_bounds() -> None:
    r = m.Reader(b"abc")
    with pytest.raises(ProtocolViolation):
        r.take(4)
    with pytest.raises(ProtocolViolation):
        r.take(-1)
    assert r.take(3) == b"abc"
    with pytest.raises(ProtocolViolation):
        r.byte()
