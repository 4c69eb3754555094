"""A client that hangs up during startup leaves no upstream backend and no ERROR behind.

Run against `oversight serve` (uvloop, as in production): there a write to a
closed client transport raises RuntimeError rather than being dropped, which
once escaped as "unexpected error in a client connection" and left the
upstream leg open until garbage collection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import psutil
import psycopg
import pytest
import scramp
from openrules import OPEN_RULES
from pgcluster import ROLE_PASSWORDS, PgCluster
from polling import eventually
from rawclient import Raw
from serveproc import Served, start_serve

from proxy import messages as m

USER = "scramuser"
DB = "postgres"


@pytest.fixture(scope="module")
def served(pg: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    d = tmp_path_factory.mktemp("hangup")
    (d / "rules.yaml").write_text(OPEN_RULES)
    s = start_serve(
        {
            "OVERSIGHT_UPSTREAM": pg.dsn(),
            "OVERSIGHT_LISTEN": "127.0.0.1:0",
            "OVERSIGHT_RULES": str(d / "rules.yaml"),
            "OVERSIGHT_AUDIT_LOG": str(d / "audit.jsonl"),
            "OVERSIGHT_ADMIN_LISTEN": "",
            "OVERSIGHT_STARTUP_TIMEOUT": "2",
        }
    )
    yield s
    s.stop()


def _upstream_sockets(served: Served, pg: PgCluster) -> int:
    """The proxy's open TCP connections to the upstream (no session is open in these tests)."""
    conns = psutil.Process(served.proc.pid).net_connections(kind="tcp")
    return sum(1 for c in conns if c.raddr and c.raddr.port == pg.port)


async def _start(raw: Raw, app: str) -> scramp.ScramClient:
    raw.send(m.startup_message({"user": USER, "database": DB, "application_name": app}))
    t, body = await raw.frame()
    assert (t, m.parse_auth(body)[0]) == (b"R", m.AUTH_SASL)  # the upstream leg is open
    return scramp.ScramClient(["SCRAM-SHA-256"], USER, ROLE_PASSWORDS[USER])


async def _after_startup(raw: Raw, app: str) -> None:
    await _start(raw, app)


async def _mid_auth(raw: Raw, app: str) -> None:
    client = await _start(raw, app)
    raw.send(m.sasl_initial_response("SCRAM-SHA-256", client.get_client_first().encode()))
    t, body = await raw.frame()
    assert (t, m.parse_auth(body)[0]) == (b"R", m.AUTH_SASL_CONTINUE)


async def _after_auth_ok(raw: Raw, app: str) -> None:
    client = await _start(raw, app)
    raw.send(m.sasl_initial_response("SCRAM-SHA-256", client.get_client_first().encode()))
    _, body = await raw.frame()
    client.set_server_first(m.parse_auth(body)[1].decode())
    raw.send(m.password_message(client.get_client_final().encode()))
    while True:
        t, body = await raw.frame()
        if t == b"R" and m.parse_auth(body)[0] == m.AUTH_OK:
            return


async def _at_ready(raw: Raw, app: str) -> None:
    """Hang up as the relay begins (the session is being set up as the RST lands)."""
    await _after_auth_ok(raw, app)
    while (await raw.frame())[0] != b"Z":
        pass


async def _stall_mid_auth(raw: Raw, app: str) -> None:
    """Say nothing more: the proxy's startup timeout ends it (the wait below is the poll)."""
    await _mid_auth(raw, app)
    assert b"authentication timeout" in await raw.read_to_eof()


Step = Callable[[Raw, str], Awaitable[None]]


@pytest.mark.parametrize(
    "step", [_after_startup, _mid_auth, _stall_mid_auth, _after_auth_ok, _at_ready]
)
async def test_hangup_during_startup_leaves_nothing(
    pg: PgCluster, served: Served, step: Step
) -> None:
    app = f"hangup-{step.__name__.strip('_')}"
    for _ in range(3):  # a few times, so a leak cannot hide behind timing
        raw = await Raw.open(served.port)
        await step(raw, app)
        raw.w.transport.abort()  # RST: the client is gone at once
    await eventually(
        lambda: _no_upstream_socket(served, pg), what="no upstream connection left open"
    )
    # The proxy still serves, and said nothing alarming about the hang-ups.
    dsn = f"postgresql://{USER}:{ROLE_PASSWORDS[USER]}@127.0.0.1:{served.port}/{DB}"
    async with await psycopg.AsyncConnection.connect(dsn) as c:
        await c.execute("SELECT 1")
    noisy = [line for line in served.log if "ERROR" in line or "Traceback" in line]
    assert noisy == []


async def _no_upstream_socket(served: Served, pg: PgCluster) -> bool:
    return _upstream_sockets(served, pg) == 0
