"""Proxy auth mode: SCRAM-SHA-256 server side and `oversight passwd`, no database.

The exchange runs over a real loopback socket pair against scramp's client
and against libpq itself (through psycopg), which sends an empty SCRAM user
name the way every libpq client does.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
import scramp

from proxy import messages as m
from proxy.errors import ProtocolViolation
from proxy.passwd import cmd_passwd, read_password, set_verifier
from proxy.scram import (
    authenticate_client,
    load_users,
    make_verifier,
    parse_verifier,
)
from proxy.streams import read_frame, read_startup_packet

MAX = 1 << 20
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Streams, Streams]]:
    a, b = socket.socketpair()
    server = await asyncio.open_connection(sock=a)
    client = await asyncio.open_connection(sock=b)
    yield server, client
    for _, w in (server, client):
        w.close()


async def scramp_client(
    client: Streams, user: str, password: str, *, tamper: bool = False
) -> tuple[list[str], bytes]:
    """Play a scramp client; return the offered mechanisms and the SASLFinal data (or b"")."""
    reader, writer = client
    f = await read_frame(reader, MAX)
    code, data = m.parse_auth(f.body)
    assert code == m.AUTH_SASL
    mechs = m.parse_sasl_mechanisms(data)
    c = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
    writer.write(m.sasl_initial_response("SCRAM-SHA-256", c.get_client_first().encode()))
    f = await read_frame(reader, MAX)
    code, data = m.parse_auth(f.body)
    assert code == m.AUTH_SASL_CONTINUE
    c.set_server_first(data.decode())
    final = c.get_client_final()
    if tamper:  # change the proof's first character (the last one partly encodes padding)
        i = final.index(",p=") + 3
        final = final[:i] + ("A" if final[i] != "A" else "B") + final[i + 1 :]
    writer.write(m.password_message(final.encode()))
    await writer.drain()
    try:
        f = await asyncio.wait_for(read_frame(reader, MAX), 0.5)
    except TimeoutError:
        return mechs, b""
    code, data = m.parse_auth(f.body)
    assert code == m.AUTH_SASL_FINAL
    c.set_server_final(data.decode())  # raises if the server signature is wrong
    return mechs, data


async def test_good_password_authenticates(pair: tuple[Streams, Streams]) -> None:
    server, client = pair
    users = {"alice": make_verifier("s3cret")}
    ok, (mechs, final) = await asyncio.gather(
        authenticate_client(*server, "alice", users, MAX),
        scramp_client(client, "alice", "s3cret"),
    )
    assert ok is True
    assert mechs == ["SCRAM-SHA-256"]  # never -PLUS
    assert final.startswith(b"v=")


async def test_wrong_password_fails_without_server_final(pair: tuple[Streams, Streams]) -> None:
    server, client = pair
    users = {"alice": make_verifier("s3cret")}
    ok, (_, final) = await asyncio.gather(
        authenticate_client(*server, "alice", users, MAX),
        scramp_client(client, "alice", "wrong"),
    )
    assert ok is False
    assert final == b""


async def test_tampered_proof_fails(pair: tuple[Streams, Streams]) -> None:
    server, client = pair
    users = {"alice": make_verifier("s3cret")}
    ok, _ = await asyncio.gather(
        authenticate_client(*server, "alice", users, MAX),
        scramp_client(client, "alice", "s3cret", tamper=True),
    )
    assert ok is False


async def test_unknown_user_runs_the_whole_exchange(pair: tuple[Streams, Streams]) -> None:
    server, client = pair
    users = {"alice": make_verifier("s3cret")}
    ok, (mechs, final) = await asyncio.gather(
        authenticate_client(*server, "mallory", users, MAX),
        scramp_client(client, "mallory", "s3cret"),
    )
    assert ok is False and mechs == ["SCRAM-SHA-256"] and final == b""


async def salt_seen(user: str, users: dict[str, str]) -> str:
    a, b = socket.socketpair()
    server = await asyncio.open_connection(sock=a)
    reader, writer = await asyncio.open_connection(sock=b)
    task = asyncio.create_task(authenticate_client(*server, user, users, MAX))
    await read_frame(reader, MAX)
    c = scramp.ScramClient(["SCRAM-SHA-256"], user, "x")
    writer.write(m.sasl_initial_response("SCRAM-SHA-256", c.get_client_first().encode()))
    _, data = m.parse_auth((await read_frame(reader, MAX)).body)
    task.cancel()
    writer.close()
    server[1].close()
    attrs = dict(p.split("=", 1) for p in data.decode().split(","))
    assert attrs["i"] == "4096"
    return attrs["s"]


async def test_unknown_user_salt_is_stable_and_looks_real() -> None:
    users = {"alice": make_verifier("s3cret")}
    s1, s2 = await salt_seen("mallory", users), await salt_seen("mallory", users)
    assert s1 == s2  # a real user's salt never changes either
    assert len(base64.b64decode(s1)) == 16
    assert await salt_seen("eve", users) != s1
    real_salt = users["alice"].split(":")[1].split("$")[0]
    assert await salt_seen("alice", users) == real_salt


async def test_non_password_message_is_a_protocol_violation(
    pair: tuple[Streams, Streams],
) -> None:
    server, (reader, writer) = pair
    task = asyncio.create_task(authenticate_client(*server, "alice", {}, MAX))
    await read_frame(reader, MAX)
    writer.write(m.query("select 1"))
    with pytest.raises(ProtocolViolation):
        await task


async def test_other_mechanism_is_refused(pair: tuple[Streams, Streams]) -> None:
    server, (reader, writer) = pair
    task = asyncio.create_task(authenticate_client(*server, "alice", {}, MAX))
    await read_frame(reader, MAX)
    writer.write(m.sasl_initial_response("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,n=,r=x"))
    with pytest.raises(ProtocolViolation, match="mechanism"):
        await task


async def test_truncated_initial_response_is_a_protocol_violation(
    pair: tuple[Streams, Streams],
) -> None:
    server, (reader, writer) = pair
    task = asyncio.create_task(authenticate_client(*server, "alice", {}, MAX))
    await read_frame(reader, MAX)
    writer.write(m.password_message(b"SCRAM-SHA-256\0\0\0\0\x50n,,"))
    with pytest.raises(ProtocolViolation):
        await task


async def libpq_login(users: dict[str, str], user: str, password: str) -> bool | str:
    """Serve one libpq connection: SCRAM, then AuthenticationOk and ReadyForQuery."""
    result: list[bool] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        msg = m.parse_startup(await read_startup_packet(reader))
        assert isinstance(msg, m.StartupMessage)
        ok = await authenticate_client(reader, writer, msg.params["user"], users, MAX)
        result.append(ok)
        if ok:
            writer.write(m.auth_request(m.AUTH_OK) + m.ready_for_query(b"I"))
        else:
            fields = {"S": "FATAL", "V": "FATAL", "C": "28P01", "M": "password failed"}
            writer.write(m.error_response(fields))
        await writer.drain()
        await reader.read()  # until the client hangs up
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        try:
            conn = await psycopg.AsyncConnection.connect(
                host="127.0.0.1",
                port=port,
                user=user,
                password=password,
                sslmode="disable",
                connect_timeout=5,
            )
        except psycopg.OperationalError as e:
            return str(e)
        await conn.close()
        return result[0]
    finally:
        srv.close()
        await srv.wait_closed()


async def test_libpq_client_with_empty_scram_user_name() -> None:
    users = {"bob": make_verifier("pässwörd")}
    assert await libpq_login(users, "bob", "pässwörd") is True
    failed = await libpq_login(users, "bob", "nope")
    assert isinstance(failed, str) and "password failed" in failed


# ---------------------------------------------------------------- verifiers and files

# Made by PostgreSQL 16 (`CREATE ROLE ... PASSWORD 'correct horse'`, from pg_authid),
# so a DBA can copy a role's rolpassword into the users file as it is.
PG16_VERIFIER = (
    "SCRAM-SHA-256$4096:yJWl9WfA4jEpgtIeUO4zRA==$4qzCmjvv96+8ShVb5jb3DV2p/BNvkQXJc0YsQwujlvk="
    ":YpvRVcUAkzWSjF0luj7FUaTOV63ZC/+9C8Ko5yi1tUA="
)


async def test_a_verifier_made_by_postgresql_authenticates(pair: tuple[Streams, Streams]) -> None:
    server, client = pair
    users = {"carol": PG16_VERIFIER}
    ok, _ = await asyncio.gather(
        authenticate_client(*server, "carol", users, MAX),
        scramp_client(client, "carol", "correct horse"),
    )
    assert ok is True
    assert await libpq_login(users, "carol", "correct horse") is True


def test_verifier_format_matches_postgresql() -> None:
    v = make_verifier("pencil")
    assert v.startswith("SCRAM-SHA-256$4096:")
    salt, stored, server, i = parse_verifier(v)
    assert (len(salt), len(stored), len(server), i) == (16, 32, 32, 4096)
    # Same arithmetic as PostgreSQL's scram_build_secret.
    _, stored2, server2, _ = scramp.ScramMechanism().make_auth_info(
        "pencil", iteration_count=4096, salt=salt
    )
    assert (stored, server) == (stored2, server2)


@pytest.mark.parametrize(
    "bad",
    [
        "md5abc",
        "SCRAM-SHA-256$4096:c2FsdA==",
        "SCRAM-SHA-256$x:c2FsdA==$AAAA:BBBB",
        "SCRAM-SHA-256$4096:!!!$AAAA:BBBB",
        "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB",  # keys not 32 bytes
        "SCRAM-SHA-256$1000:" + PG16_VERIFIER.split(":", 1)[1],  # too few rounds for scramp
        "SCRAM-SHA-256$4096:c2FsdA==$" + PG16_VERIFIER.split("$", 2)[2],  # 4-byte salt
    ],
)
def test_parse_verifier_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_verifier(bad)


def test_load_users_reports_the_bad_line(tmp_path: Path) -> None:
    p = tmp_path / "users"
    p.write_text(f"# comment\n\nalice:{make_verifier('a')}\nbob:md5xyz\n")
    with pytest.raises(ValueError, match=r"users:4:"):
        load_users(str(p))
    p.write_text(f"# comment\n\nalice:{make_verifier('a')}\n")
    assert list(load_users(str(p))) == ["alice"]


class FakeStdin(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_passwd_adds_then_updates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "users")
    monkeypatch.setattr("sys.stdin", FakeStdin("first\n"))
    assert cmd_passwd("alice", path) == 0
    monkeypatch.setattr("sys.stdin", FakeStdin("other\n"))
    assert cmd_passwd("bob", path) == 0
    alice_before = load_users(path)["alice"]
    monkeypatch.setattr("sys.stdin", FakeStdin("second\n"))
    assert cmd_passwd("alice", path) == 0
    out = capsys.readouterr().out
    assert "added SCRAM-SHA-256 verifier for alice" in out
    assert "updated SCRAM-SHA-256 verifier for alice" in out
    users = load_users(path)
    assert list(users) == ["alice", "bob"]
    assert users["alice"] != alice_before
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # The stored verifier checks the new password and not the old one.
    salt, stored, server, i = parse_verifier(users["alice"])
    mech = scramp.ScramMechanism()
    assert mech.make_auth_info("second", i, salt)[1:3] == (stored, server)
    assert mech.make_auth_info("first", i, salt)[1:3] != (stored, server)


def test_oversight_passwd_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.cli import main

    path = tmp_path / "users"
    monkeypatch.setattr("sys.stdin", FakeStdin("pw1\n"))
    assert main(["passwd", "dave", "--file", str(path)]) == 0
    monkeypatch.setenv("OVERSIGHT_USERS_FILE", str(path))
    monkeypatch.setattr("sys.stdin", FakeStdin("pw2\n"))
    assert main(["passwd", "erin"]) == 0
    assert list(load_users(str(path))) == ["dave", "erin"]


def test_passwd_refuses_empty_password_and_bad_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "users"
    monkeypatch.setattr("sys.stdin", FakeStdin("\n"))
    assert cmd_passwd("alice", str(path)) == 1
    monkeypatch.setattr("sys.stdin", FakeStdin("pw\n"))
    assert cmd_passwd("al:ice", str(path)) == 1
    assert not path.exists()


def test_passwd_asks_twice_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter(["one", "two", "same", "same"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert read_password(Tty()) is None
    assert read_password(Tty()) == "same"


def test_set_verifier_keeps_comments_and_other_users(tmp_path: Path) -> None:
    p = tmp_path / "users"
    p.write_text("# alice:not-this\ncarol:X\nalice:old")
    assert set_verifier(str(p), "alice", "NEW") is True
    assert p.read_text() == "# alice:not-this\ncarol:X\nalice:NEW\n"
