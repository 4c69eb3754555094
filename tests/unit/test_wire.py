"""Framing: whole messages out of an arbitrarily chunked byte stream, limits enforced early."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import ProtocolViolation
from proxy.wire import MAX_STARTUP, Frame, FrameReader, frame, read_startup

STREAM = (
    frame(b"Q", b"select 1\0")
    + frame(b"S")
    + frame(b"P", b"s1\0select $1\0\0\x01\0\0\0\x17")
    + frame(b"d", b"x" * 300)
    + frame(b"X")
)
FRAMES = [
    Frame(b"Q", b"select 1\0"),
    Frame(b"S", b""),
    Frame(b"P", b"s1\0select $1\0\0\x01\0\0\0\x17"),
    Frame(b"d", b"x" * 300),
    Frame(b"X", b""),
]


def drain(reader: FrameReader) -> list[Frame]:
    return list(reader)


def test_frame_and_raw_agree() -> None:
    for f in FRAMES:
        assert f.raw == frame(f.type, f.body)
        assert struct.unpack("!I", f.raw[1:5])[0] == len(f.body) + 4


def test_many_frames_in_one_feed() -> None:
    r = FrameReader()
    r.feed(STREAM)
    assert drain(r) == FRAMES
    assert r.pending() == 0


def test_a_frame_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        r = FrameReader()
        r.feed(STREAM[:cut])
        got = drain(r)
        r.feed(STREAM[cut:])
        got += drain(r)
        assert got == FRAMES, cut
        assert r.pending() == 0


def test_one_byte_at_a_time() -> None:
    r = FrameReader()
    got: list[Frame] = []
    for i in range(len(STREAM)):
        r.feed(STREAM[i : i + 1])
        got += drain(r)
    assert got == FRAMES


def test_partial_frame_waits_and_stays_buffered() -> None:
    r = FrameReader()
    r.feed(STREAM[:3])
    assert drain(r) == []
    assert r.pending() == 3
    r.feed(STREAM[3:7])
    assert drain(r) == []
    assert r.take_rest() == STREAM[:7]
    assert r.pending() == 0


@pytest.mark.parametrize("length", [0, 1, 2, 3])
def test_length_below_four_is_a_violation(length: int) -> None:
    r = FrameReader()
    r.feed(b"Q" + struct.pack("!I", length) + b"xxxx")
    with pytest.raises(ProtocolViolation, match="invalid message length"):
        next(r)


@pytest.mark.parametrize("raw_length", [0x80000000, 0xFFFFFFFF, 0xFFFFFFFC])
def test_negative_length_is_a_violation(raw_length: int) -> None:
    # As a signed Int32 these are negative; PostgreSQL refuses them too.
    r = FrameReader()
    r.feed(b"D" + struct.pack("!I", raw_length))
    with pytest.raises(ProtocolViolation):
        next(r)


def test_oversized_message_is_refused_from_its_header_alone() -> None:
    r = FrameReader(max_size=1000)
    r.feed(b"Q" + struct.pack("!I", 1001))  # no body yet: refused before buffering it
    with pytest.raises(ProtocolViolation, match="exceeds the limit of 1000"):
        next(r)


def test_message_of_exactly_the_limit_is_accepted() -> None:
    r = FrameReader(max_size=1000)
    r.feed(frame(b"d", b"z" * 996))
    assert drain(r) == [Frame(b"d", b"z" * 996)]


def test_frames_after_a_frame_are_left_for_later() -> None:
    r = FrameReader()
    r.feed(STREAM)
    assert next(r) == FRAMES[0]
    assert r.pending() == len(STREAM) - len(FRAMES[0].raw)


@given(
    st.lists(st.tuples(st.binary(min_size=1, max_size=1), st.binary(max_size=200)), max_size=20),
    st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=50),
)
def test_any_stream_in_any_chunks_reassembles(
    frames: list[tuple[bytes, bytes]], chunks: list[int]
) -> None:
    data = b"".join(frame(t, b) for t, b in frames)
    r = FrameReader()
    got: list[Frame] = []
    pos = i = 0
    while pos < len(data):
        n = chunks[i % len(chunks)]
        r.feed(data[pos : pos + n])
        pos += n
        i += 1
        got += drain(r)
    assert got == [Frame(t, b) for t, b in frames]
    assert r.pending() == 0


# ---------------------------------------------------------------- startup packets


def startup_packet(size: int) -> bytes:
    return struct.pack("!I", size) + b"\0" * (size - 4)


def test_startup_packet_partial_returns_none() -> None:
    packet = startup_packet(16)
    for cut in range(len(packet)):
        buf = bytearray(packet[:cut])
        assert read_startup(buf) is None
        assert bytes(buf) == packet[:cut]


def test_startup_packets_are_taken_one_at_a_time() -> None:
    buf = bytearray(startup_packet(8) + startup_packet(12) + b"\0\0")
    assert read_startup(buf) == startup_packet(8)
    assert read_startup(buf) == startup_packet(12)
    assert read_startup(buf) is None
    assert bytes(buf) == b"\0\0"


def test_startup_limit_is_postgresqls() -> None:
    # ProcessStartupPacket: `len -= 4; if (len < 4 || len > MAX_STARTUP_PACKET_LENGTH)`,
    # so 10000 bytes after the length word are still fine.
    assert read_startup(bytearray(startup_packet(10_004))) == startup_packet(10_004)
    with pytest.raises(ProtocolViolation):
        read_startup(bytearray(startup_packet(10_005)))


@pytest.mark.parametrize("size", [8, 100, MAX_STARTUP])
def test_startup_packet_sizes_within_the_limits(size: int) -> None:
    assert read_startup(bytearray(startup_packet(size))) == startup_packet(size)


@pytest.mark.parametrize("size", [0, 4, 7, MAX_STARTUP + 1, 0x7FFFFFFF, 0xFFFFFFFF])
def test_startup_packet_sizes_outside_the_limits(size: int) -> None:
    with pytest.raises(ProtocolViolation, match="invalid startup packet length"):
        read_startup(bytearray(struct.pack("!I", size)))
