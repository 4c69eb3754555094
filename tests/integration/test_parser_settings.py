"""Settings that would make PostgreSQL read statement text differently from the proxy.

With standard_conforming_strings off, `'\\'` no longer ends a string for the
server, so text the proxy read as a literal runs as SQL: a denied column
could be read. Every way in is closed: SET and set_config() (and UPDATE pg_settings) are refused,
a session whose startup parameters (PGOPTIONS, role or database settings)
say so is refused, and a session the server reports the change for by any
other path is ended before anything more is relayed.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from conftest import COMPAT_USER

# Under standard_conforming_strings=off the server reads `notes` as a column here.
SMUGGLE = "SELECT '\\' AS a, ' , notes FROM compat.people -- ' AS b"


async def test_set_config_of_parser_settings_is_refused(compat_proxy: Any) -> None:
    dsn = compat_proxy.dsn(user=COMPAT_USER)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for sql in (
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            "SELECT set_config('client_encoding', 'EUC_TW', false)",
            "SET standard_conforming_strings = off",
            "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as exc:
                await conn.execute(sql)
            assert "oversight: blocked by defaults." in str(exc.value)
        cur = await conn.execute(SMUGGLE)
        assert await cur.fetchall() == [("\\", " , notes FROM compat.people -- ")]
        cur = await conn.execute("SHOW standard_conforming_strings")
        assert await cur.fetchone() == ("on",)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("-c standard_conforming_strings=off", "standard_conforming_strings must stay on"),
        ("-c client_encoding=EUC_TW", "client_encoding EUC_TW is not supported by the proxy"),
    ],
)
async def test_a_session_starting_with_them_is_refused(
    compat_proxy: Any, option: str, message: str
) -> None:
    dsn = compat_proxy.dsn(user=COMPAT_USER)
    with pytest.raises(psycopg.OperationalError) as exc:
        await psycopg.AsyncConnection.connect(dsn, options=option)
    assert f"oversight: {message}" in str(exc.value)


async def test_a_change_the_proxy_did_not_see_coming_ends_the_session(
    proxy_factory: Any,
) -> None:
    # No policy here, so set_config itself is not refused: the server's
    # ParameterStatus is what the proxy sees, and it ends the session.
    proxy = await proxy_factory()
    async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as exc:
            await conn.execute("SELECT set_config('standard_conforming_strings', 'off', false)")
            await conn.execute("SELECT 1")
        assert "standard_conforming_strings must stay on" in str(exc.value)
        assert conn.closed or conn.broken
