"""Client encodings through the proxy: statement text is read as the server reads it.

A multibyte encoding whose characters can end in 0x5C (SJIS, GBK) is the
classic way to make a proxy and a server read one statement two ways:
`E'表' , notes ...` is one string literal to a reader that sees 0x95 0x5C as
a byte and a backslash-escaped quote, and a literal followed by SQL to the
server. These tests send such bytes raw and check that rules hold, that
non-ASCII names and literals round-trip, that changes of client_encoding
are followed when the server applies them (pipelined text included), and
that the codec table reads every byte sequence exactly as the server does.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from conftest import COMPAT_USER
from pgcluster import ROLE_PASSWORDS, TEST_DB, PgCluster
from rawclient import Raw, errors_in
from test_clients_psql import psql_binary

from proxy import messages as m
from proxy.encodings import BY_NAME, EncodingError
from proxy.wire import frame

PASSWORD = ROLE_PASSWORDS[COMPAT_USER]
RULES = f"""\
version: 1
defaults:
  unknown_tables: allow
  unparsed: block
  statements: [select, show, set, reset, begin, commit, rollback]
users:
  {COMPAT_USER}: {{groups: [analysts]}}
rules:
  - id: enc-customers
    match: {{groups: [analysts]}}
    table: enc.顧客
    row_filter: "region = 'east'"
    columns: {{ssn: redact, notes: deny}}
  - id: enc-kunden
    match: {{groups: [analysts]}}
    table: enc.kunden
    row_filter: "region = 'east'"
    columns: {{ssn: redact, notes: deny}}
  - id: enc-stars
    match: {{groups: [analysts]}}
    table: enc.stars
    columns: {{memo: {{sql: "'★'"}}}}
"""
ROWS = [(1, "山田", "111-11-1111", "secret 1", "east"), (2, "Müller", "222", "secret 2", "west")]


@pytest.fixture(scope="module")
def enc_schema(pg: PgCluster) -> Iterator[None]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS enc CASCADE")
        conn.execute("CREATE SCHEMA enc")
        conn.execute(
            'CREATE TABLE enc."顧客" (id int, "名前" text, ssn text, notes text, region text)'
        )
        conn.execute("CREATE TABLE enc.stars (id int, memo text)")
        conn.execute(
            'CREATE TABLE enc.kunden (id int, "straße" text, ssn text, notes text, region text)'
        )
        conn.execute(
            "INSERT INTO enc.kunden VALUES"
            " (1, 'Hauptstraße', '1', 'n', 'east'), (2, 'Gasse', '2', 'n', 'west')"
        )
        conn.execute("INSERT INTO enc.stars VALUES (1, 'plain')")
        with conn.cursor() as cur:
            cur.executemany('INSERT INTO enc."顧客" VALUES (%s, %s, %s, %s, %s)', ROWS)
        conn.execute(f'GRANT USAGE ON SCHEMA enc TO "{COMPAT_USER}"')
        conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA enc TO "{COMPAT_USER}"')
    yield
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS enc CASCADE")


@pytest.fixture
async def enc_proxy(pg: PgCluster, enc_schema: None, proxy_factory: Any, tmp_path: Path) -> Any:
    from proxy.catalog import load_catalog
    from proxy.enforce import Enforcer
    from proxy.rules import load_rules

    path = tmp_path / "enc.yaml"
    path.write_text(RULES)
    rules = load_rules(path)
    return await proxy_factory(
        hooks=Enforcer(rules, await load_catalog(pg.dsn()), None), rules=path
    )


async def login(proxy: Any, encoding: str) -> Raw:
    raw = await Raw.open(proxy.port)
    await raw.login(COMPAT_USER, PASSWORD, TEST_DB, client_encoding=encoding)
    return raw


def query(sql: str, codec: str) -> bytes:
    return m.query(sql.encode(codec))


# Bind the unnamed statement to the unnamed portal: no parameters, text results.
BIND = frame(b"B", b"\0\0" + b"\0\0" * 3)
TABLE = 'enc.U&"\\9867\\5BA2"'  # enc.顧客, written so that WIN1252 can carry the name


async def run(raw: Raw, data: bytes) -> list[tuple[bytes, bytes]]:
    raw.send(data)
    return await raw.until(b"Z")


def rows(frames: list[tuple[bytes, bytes]], codec: str) -> list[tuple[str | None, ...]]:
    out = []
    for t, body in frames:
        if t != b"D":
            continue
        r = m.Reader(body)
        row: list[str | None] = []
        for _ in range(r.i16()):
            n = r.i32()
            row.append(None if n < 0 else r.take(n).decode(codec))
        out.append(tuple(row))
    return out


def statement_records(path: Path) -> list[dict[str, Any]]:
    records = map(orjson.loads, path.read_bytes().splitlines())
    return [r for r in records if r.get("event") == "statement"]


# An E-string ending in a character whose last byte is 0x5C: read byte-wise,
# `\'` escapes the quote and the denied column hides inside the literal.
SMUGGLE = "SELECT E'{c}' , notes FROM enc.顧客 -- '"


@pytest.mark.parametrize(
    ("encoding", "codec", "char"),
    [
        ("SJIS", "cp932", "表"),
        ("GBK", "gbk", "乗"),
        ("BIG5", "big5", "許"),
        ("SHIFT_JIS_2004", "shift_jis_2004", "表"),
    ],
)
async def test_a_quote_hidden_behind_0x5c_does_not_hide_a_denied_column(
    enc_proxy: Any, encoding: str, codec: str, char: str
) -> None:
    sql = SMUGGLE.format(c=char)
    assert sql.encode(codec).count(b"\\'") == 1  # the bytes really hold the trap
    raw = await login(enc_proxy, encoding)
    try:
        errors = errors_in(await run(raw, query(sql, codec)))
        assert errors and errors[0]["C"] == "42501", errors
        assert "enc-customers" in errors[0]["M"]
        # The same character in an ordinary literal round-trips, masks and filters hold.
        frames = await run(
            raw, query(f"SELECT E'{char}' AS c, \"名前\", ssn FROM enc.顧客 ORDER BY id", codec)
        )
        assert not errors_in(frames)
        assert rows(frames, codec) == [(char, "山田", "****")]
    finally:
        raw.close()
    audited = [r for r in statement_records(enc_proxy.audit_log) if "名前" in r["sql"]]
    assert audited and audited[-1]["client_encoding"] == encoding


async def test_win1252_masks_filters_and_non_ascii_round_trip(enc_proxy: Any) -> None:
    raw = await login(enc_proxy, "WIN1252")
    try:
        sql = "SELECT 'ü€' AS lit, \"straße\", ssn FROM enc.kunden"
        frames = await run(raw, query(sql, "cp1252"))
        assert rows(frames, "cp1252") == [("ü€", "Hauptstraße", "****")]  # masked, filtered
        errors = errors_in(await run(raw, query("SELECT 'ü', notes FROM enc.kunden", "cp1252")))
        assert errors[0]["C"] == "42501" and "enc-kunden" in errors[0]["M"], errors
        # The rewrite names the table 顧客 as it is, which WIN1252 cannot write.
        errors = errors_in(await run(raw, query(f"SELECT ssn FROM {TABLE}", "cp1252")))
        assert errors[0]["C"] == "22P05" and "enc-customers" in errors[0]["M"], errors
        # A mask whose text WIN1252 cannot write is refused, naming its rule.
        errors = errors_in(await run(raw, query("SELECT memo FROM enc.stars", "cp1252")))
        assert errors[0]["C"] == "22P05" and "enc-stars" in errors[0]["M"], errors
        frames = await run(raw, query("SELECT 1", "cp1252"))
        assert rows(frames, "cp1252") == [("1",)]
    finally:
        raw.close()


async def test_invalid_bytes_are_refused_as_postgresql_refuses_them(enc_proxy: Any) -> None:
    raw = await login(enc_proxy, "SJIS")
    try:
        errors = errors_in(await run(raw, m.query(b"SELECT '\x82\x27'")))
        assert errors[0]["C"] == "22021", errors
        assert errors[0]["M"] == 'invalid byte sequence for encoding "SJIS": 0x82 0x27'
        frames = await run(raw, query("SELECT 'ok'", "cp932"))
        assert rows(frames, "cp932") == [("ok",)]
    finally:
        raw.close()
    raw = await login(enc_proxy, "BIG5")
    try:
        # A pair the server reads as U+FFFD, Python as a character: refused.
        errors = errors_in(await run(raw, m.query(b"SELECT '\xa1\x5a'")))
        assert errors[0]["C"] == "22P05" and "0xa1 0x5a" in errors[0]["M"], errors
        # The same bytes straddling two characters are no such pair.
        frames = await run(raw, m.query(b"SELECT '\xb3\xa1Z'"))
        assert rows(frames, "big5") == [("部Z",)]
    finally:
        raw.close()


async def test_set_client_encoding_mid_session_and_pipelined(enc_proxy: Any) -> None:
    raw = await login(enc_proxy, "UTF8")
    try:
        # Pipelined behind the SET: held until the server reports the change,
        # then read in SJIS, so the smuggled column is seen and refused.
        raw.send(m.query(b"SET client_encoding TO 'SJIS'") + query(SMUGGLE.format(c="表"), "cp932"))
        frames = await raw.until(b"Z") + await raw.until(b"Z")
        errors = errors_in(frames)
        assert [e["C"] for e in errors] == ["42501"], errors
        frames = await run(raw, query("SELECT '表'", "cp932"))
        assert rows(frames, "cp932") == [("表",)]
        frames = await run(raw, query("RESET client_encoding", "cp932"))
        frames = await run(raw, query("SELECT '表'", "utf-8"))
        assert rows(frames, "utf-8") == [("表",)]
    finally:
        raw.close()
    encodings = [r["client_encoding"] for r in statement_records(enc_proxy.audit_log)]
    assert encodings == ["UTF8", "SJIS", "SJIS", "SJIS", "UTF8"]


async def test_text_in_the_same_batch_after_a_change_is_refused(enc_proxy: Any) -> None:
    raw = await login(enc_proxy, "UTF8")
    try:
        batch = m.parse("", "SET client_encoding TO 'SJIS'") + BIND + m.execute("")
        batch += m.parse("", SMUGGLE.format(c="表").encode("cp932")) + BIND
        raw.send(batch + m.execute("") + b"S\0\0\0\4")
        frames = await raw.until(b"Z")
        errors = errors_in(frames)
        assert [e["C"] for e in errors] == ["0A000"], errors
        assert "same batch" in errors[0]["M"]
        # The batch failed as a whole: the SET rolled back with it.
        frames = await run(raw, query("SHOW client_encoding", "utf-8"))
        assert rows(frames, "utf-8") == [("UTF8",)]
    finally:
        raw.close()


async def test_unsupported_encodings_are_refused_with_the_list(enc_proxy: Any) -> None:
    dsn = enc_proxy.dsn(user=COMPAT_USER)
    with pytest.raises(psycopg.OperationalError) as exc:
        await psycopg.AsyncConnection.connect(dsn, options="-c client_encoding=EUC_TW")
    assert "client_encoding EUC_TW is not supported by the proxy (supported: SQL_ASCII" in str(
        exc.value
    )
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            await conn.execute("SET client_encoding TO 'EUC_TW'")
        assert "EUC_TW is not supported" in str(refused.value) and "SJIS" in str(refused.value)
        await conn.execute("SET client_encoding TO 'LATIN1'")
        cur = await conn.execute("SELECT 'é'")
        assert await cur.fetchone() == ("é",)


async def test_psql_with_a_windows_console_encoding(
    pg: PgCluster, enc_proxy: Any, run_sync: Any
) -> None:
    params = enc_proxy.params(user=COMPAT_USER)
    env = {**os.environ, "PGPASSWORD": PASSWORD, "PGCLIENTENCODING": "WIN1252", "LC_ALL": "C"}
    cmd = [psql_binary(pg), "-X", "-At", "-h", params["host"], "-p", str(params["port"])]
    cmd += ["-U", COMPAT_USER, "-d", params["database"], "-c"]
    sql = "SELECT 'Grüße', \"straße\", ssn, current_setting('client_encoding') FROM enc.kunden"
    proc = await run_sync(
        subprocess.run, [*cmd, sql.encode("cp1252")], capture_output=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode("cp1252").strip() == "Grüße|Hauptstraße|****|WIN1252"
    proc = await run_sync(
        subprocess.run,
        [*cmd, "SELECT notes FROM enc.kunden"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode != 0 and b"enc-kunden" in proc.stderr


def _server_reads(conn: psycopg.Connection[Any], seqs: list[bytes], name: str) -> list[str | None]:
    """The server's reading of each byte sequence in encoding `name` (None: it refuses it)."""
    out: list[str | None] = []
    for i in range(0, len(seqs), 20000):
        cur = conn.execute(
            "SELECT pg_temp.try_convert(b, %s) FROM unnest(%s::bytea[]) WITH ORDINALITY u(b, n)"
            " ORDER BY n",
            (name, seqs[i : i + 20000]),
        )
        out += [r[0] for r in cur.fetchall()]
    return out


def _sequences(name: str) -> list[bytes]:
    """Every single byte and, for a multibyte encoding, every two-byte sequence, and more."""
    seqs = [bytes([b]) for b in range(1, 256)]
    if BY_NAME[name].codec.startswith(("iso8859", "cp12", "cp86", "cp87", "koi8")):
        return seqs
    seqs += [bytes([a, b]) for a in range(0x80, 256) for b in range(1, 256)]
    if name in ("EUC_JP", "EUC_JIS_2004"):  # JIS X 0212 / 0213 plane 2 behind SS3
        seqs += [bytes([0x8F, a, b]) for a in range(0xA1, 0xFF) for b in range(0xA1, 0xFF)]
    if name == "GB18030":  # four-byte sequences of the BMP
        seqs += [
            bytes([a, b, c, d])
            for a in range(0x81, 0x85)
            for b in range(0x30, 0x3A)
            for c in range(0x81, 0xFF)
            for d in range(0x30, 0x3A)
        ]
    return seqs


@pytest.mark.parametrize("name", [n for n in BY_NAME if n != "UTF8"])
def test_the_codec_reads_every_sequence_as_the_server_does(pg: PgCluster, name: str) -> None:
    """Where the server reads bytes, the codec reads the same characters or refuses them."""
    enc = BY_NAME[name]
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION pg_temp.try_convert(b bytea, e name) RETURNS text LANGUAGE plpgsql"
            " AS $$ BEGIN RETURN convert_from(b, e); EXCEPTION WHEN others THEN RETURN NULL;"
            " END $$"
        )
        seqs = _sequences(name)
        server = _server_reads(conn, seqs, name)
        differ, accepted = [], []
        for seq, theirs in zip(seqs, server, strict=True):
            try:
                ours: str | None = enc.decode(seq)
            except EncodingError:
                ours = None
            if theirs is not None and ours is not None:
                accepted.append(ours)
                if ours != theirs:
                    differ.append((seq.hex(), theirs, ours))
        assert differ == []
        assert len(accepted) > (120 if len(seqs) < 256 else 5000)
        # And what the proxy writes back in the encoding, the server reads as meant.
        text = "\n".join(accepted)
        back = conn.execute("SELECT convert_from(%s, %s)", (enc.encode(text), name)).fetchone()
        assert back == (text,)


async def test_psycopg_in_sjis_extended_protocol_and_pipeline(enc_proxy: Any) -> None:
    dsn = enc_proxy.dsn(user=COMPAT_USER)
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, client_encoding="SJIS")
    async with conn:
        sql = 'SELECT %s::text, "名前", ssn FROM enc.顧客 WHERE "名前" = %s'
        cur = await conn.execute(sql, ("表", "山田"))  # Parse/Bind/Execute, text in SJIS
        assert await cur.fetchall() == [("表", "山田", "****")]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute('SELECT notes FROM enc.顧客 WHERE "名前" = %s', ("山田",))
        # A pipeline that changes the encoding and goes on in the same batch is refused
        # past the change; the next one runs in the new encoding.
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            async with conn.pipeline():
                await conn.execute("SET client_encoding TO 'UTF8'")
                await conn.execute("SELECT %s::text", ("表",))
        assert conn.info.encoding == "shift_jis"  # the SET was rolled back with its batch
        async with conn.pipeline():
            await conn.execute("SET client_encoding TO 'EUC_KR'")
        async with conn.pipeline():
            cur = await conn.execute("SELECT %s::text, ssn FROM enc.kunden", ("한국",))
        assert await cur.fetchall() == [("한국", "****")]


async def test_changes_the_proxy_cannot_follow_end_the_session(
    pg: PgCluster, proxy_factory: Any
) -> None:
    # No policy here, so nothing refuses the SET itself: the server's report does.
    proxy = await proxy_factory()
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(
            "CREATE OR REPLACE FUNCTION public.enc_switch() RETURNS int LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM set_config('client_' || 'encoding', 'LATIN1', false);"
            " RETURN 1; END $$"
        )
    try:
        for sql, message in (
            ("SET client_encoding TO 'EUC_TW'", "client_encoding EUC_TW is not supported"),
            ("SELECT public.enc_switch()", "changed to LATIN1 in a way the proxy cannot follow"),
        ):
            async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as c:
                with pytest.raises(psycopg.Error) as exc:
                    await c.execute(sql)
                    await c.execute("SELECT 1")
                assert message in str(exc.value)
                assert c.closed or c.broken
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("DROP FUNCTION public.enc_switch()")


async def test_sql_ascii_is_read_in_the_database_encoding(
    pg: PgCluster, proxy_factory: Any
) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for name, encoding in (("enc_latin1", "LATIN1"), ("enc_euctw", "EUC_TW")):
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(
                f"CREATE DATABASE {name} ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C'"
                " TEMPLATE template0"
            )
    proxy = await proxy_factory()
    password = pg.params()["password"]
    try:
        raw = await Raw.open(proxy.port)
        await raw.login(pg.params()["user"], password, "enc_latin1", client_encoding="SQL_ASCII")
        frames = await run(
            raw, m.query(b"SELECT 'caf\xe9'")
        )  # LATIN1 bytes, as the server reads them
        assert rows(frames, "latin-1") == [("café",)]
        raw.close()
        encodings = [r["client_encoding"] for r in statement_records(proxy.audit_log)]
        assert encodings == ["SQL_ASCII"]
        # On a database whose encoding the proxy has no codec for, SQL_ASCII is refused.
        with pytest.raises(psycopg.OperationalError) as exc:
            await psycopg.AsyncConnection.connect(
                proxy.dsn(dbname="enc_euctw"), client_encoding="SQL_ASCII"
            )
        assert "a database in EUC_TW is not supported" in str(exc.value)
        # With no client_encoding the server takes the database's: EUC_TW, refused too.
        with pytest.raises(psycopg.OperationalError):
            await psycopg.AsyncConnection.connect(proxy.dsn(dbname="enc_euctw"))
        euctw = proxy.dsn(dbname="enc_euctw")
        async with await psycopg.AsyncConnection.connect(euctw, client_encoding="UTF8") as conn:
            cur = await conn.execute("SELECT '中文'")  # UTF8 client: the server converts
            assert await cur.fetchone() == ("中文",)
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS enc_latin1 WITH (FORCE)")
            conn.execute("DROP DATABASE IF EXISTS enc_euctw WITH (FORCE)")
