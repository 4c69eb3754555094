"""SCRAM-SHA-256 on the client leg, for proxy auth mode (OVERSIGHT_AUTH=proxy).

In proxy mode Oversight itself checks who the client is, against verifiers
written by `oversight passwd` in PostgreSQL's own `rolpassword` format
(`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), then connects
upstream as its service account. The proxy keeps only verifiers, never
passwords, just as PostgreSQL does.

The SCRAM arithmetic is scramp's (pg8000's own library). Two PostgreSQL
habits need care around it:

- PostgreSQL ignores the SCRAM user name (the startup `user` is what counts)
  and libpq sends an empty one (`n=`), which scramp refuses to parse. The
  proof covers the client's exact first message, so scramp is handed a copy
  with a placeholder name and its record of that message is then put back
  to the bytes the client really sent.
- An unknown user gets a full exchange against a fake verifier, with a
  salt derived from the user name and a per-process secret (PostgreSQL's
  "mock" SCRAM secret), so neither timing nor salt tells which users exist.

Only plain SCRAM-SHA-256 is offered: channel binding (-PLUS) cannot work
because the client's TLS ends at the proxy, not at whoever checks the proof.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os

import scramp

from proxy import messages as m
from proxy.errors import ProtocolViolation
from proxy.streams import read_frame

MECHANISM = "SCRAM-SHA-256"
PREFIX = MECHANISM + "$"
_MOCK_SECRET = os.urandom(32)
_MECH = scramp.ScramMechanism(MECHANISM)

Verifier = tuple[bytes, bytes, bytes, int]  # salt, StoredKey, ServerKey, iterations


def format_verifier(salt: bytes, stored_key: bytes, server_key: bytes, iterations: int) -> str:
    """PostgreSQL's rolpassword text for a SCRAM-SHA-256 secret."""
    b64 = base64.b64encode
    return (
        f"{PREFIX}{iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def make_verifier(password: str, iterations: int = 4096) -> str:
    """A fresh verifier for `password`, with a 16-byte random salt as PostgreSQL makes."""
    salt, stored, server, i = _MECH.make_auth_info(
        password, iteration_count=iterations, salt=os.urandom(16)
    )
    return format_verifier(salt, stored, server, i)


def parse_verifier(text: str) -> Verifier:
    """Decode a rolpassword-format verifier; ValueError when it is not one."""
    if not text.startswith(PREFIX):
        raise ValueError(f"not a {MECHANISM} verifier")
    try:
        iter_salt, keys = text[len(PREFIX) :].split("$")
        iterations, salt = iter_salt.split(":")
        stored, server = keys.split(":")
        out = (
            base64.b64decode(salt, validate=True),
            base64.b64decode(stored, validate=True),
            base64.b64decode(server, validate=True),
            int(iterations),
        )
    except (ValueError, binascii.Error) as e:
        raise ValueError(f"malformed {MECHANISM} verifier") from e
    if len(out[1]) != 32 or len(out[2]) != 32:
        raise ValueError(f"malformed {MECHANISM} verifier")
    # scramp's bounds (PostgreSQL's defaults sit inside them: 16-byte salt, 4096 rounds).
    if len(out[0]) < 12 or not 4096 <= out[3] <= 10_000_000:
        raise ValueError("verifier needs a salt of 12+ bytes and 4096 to 10000000 iterations")
    return out


def load_users(path: str) -> dict[str, str]:
    """Read `user:verifier` lines (blank lines and `#` comments skipped).

    Every verifier is checked here, so a bad file is refused at startup
    with its line number rather than failing a login later.
    """
    users: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, verifier = line.partition(":")
            if not sep or not user:
                raise ValueError(f"{path}:{n}: expected user:verifier")
            try:
                parse_verifier(verifier)
            except ValueError as e:
                raise ValueError(f"{path}:{n}: {e}") from None
            users[user] = verifier
    return users


def _mock_verifier(user: str) -> Verifier:
    """A stable but useless verifier for a user who does not exist."""
    digest = hmac.new(_MOCK_SECRET, user.encode("utf-8", "surrogateescape"), hashlib.sha256)
    salt = digest.digest()[:16]
    return salt, os.urandom(32), os.urandom(32), 4096


def _client_first_for_scramp(client_first: str) -> str:
    """Give an empty SCRAM user name (libpq's `n=`) a placeholder scramp accepts."""
    parts = client_first.split(",", 2)
    if len(parts) == 3 and parts[2].startswith("n=,"):
        return f"{parts[0]},{parts[1]},n=*,{parts[2][3:]}"
    return client_first


def _bare(client_first: str) -> str:
    """client-first-message-bare: everything after the gs2 header's two commas."""
    parts = client_first.split(",", 2)
    return parts[2] if len(parts) == 3 else ""


async def authenticate_client(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    user: str,
    verifiers: dict[str, str],
    max_message: int,
) -> bool:
    """Run the server side of SCRAM-SHA-256 with the client; True when its proof checks.

    On success AuthenticationSASLFinal has been sent and the caller goes on
    with AuthenticationOk; on False nothing final has been sent and the
    caller answers with the usual 28P01 error. A client that breaks the
    exchange raises ProtocolViolation; one that hangs up, IncompleteReadError.
    """
    known = user in verifiers
    try:
        verifier = parse_verifier(verifiers[user]) if known else _mock_verifier(user)
    except ValueError:
        known, verifier = False, _mock_verifier(user)
    server = _MECH.make_server(lambda _name: verifier)

    writer.write(m.auth_sasl([MECHANISM]))
    await writer.drain()
    mechanism, client_first = _initial_response(await _password_frame(reader, max_message))
    if mechanism != MECHANISM:
        raise ProtocolViolation(f"client selected an invalid SASL mechanism {mechanism!r}")
    try:
        server.set_client_first(_client_first_for_scramp(client_first))
        # The proof is over the exact message the client sent, not our copy.
        server.client_first_bare = _bare(client_first)
        server_first = server.get_server_first()
    except scramp.ScramException as e:
        raise ProtocolViolation(f"malformed SCRAM client-first message: {e}") from None

    writer.write(m.auth_request(m.AUTH_SASL_CONTINUE, server_first.encode()))
    await writer.drain()
    client_final = (await _password_frame(reader, max_message)).decode("utf-8", "replace")
    try:
        server.set_client_final(client_final)
    except scramp.ScramException:
        return False  # wrong password, or a tampered nonce or channel-binding flag
    if not known:
        return False  # unreachable with random keys, but never trust luck
    writer.write(m.auth_request(m.AUTH_SASL_FINAL, server.get_server_final().encode()))
    await writer.drain()
    return True


async def _password_frame(reader: asyncio.StreamReader, max_message: int) -> bytes:
    f = await read_frame(reader, max_message)
    if f.type != b"p":
        raise ProtocolViolation(f"expected a SASL response, got message type {f.type!r}")
    return f.body


def _initial_response(body: bytes) -> tuple[str, str]:
    """SASLInitialResponse: mechanism name, then an Int32-prefixed client-first message."""
    r = m.Reader(body)
    mechanism = r.cstr()
    n = r.i32()
    if n < 0:
        raise ProtocolViolation("SASLInitialResponse without data")
    return mechanism, r.take(n).decode("utf-8", "replace")
