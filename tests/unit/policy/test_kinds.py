"""Statement splitting, U& identifiers and kinds from the leading keywords."""

from __future__ import annotations

import pytest

from proxy.policy.kinds import head, search_path_of
from proxy.policy.split import SplitError, split, unescape_unicode


@pytest.mark.parametrize(
    ("sql", "texts"),
    [
        ("SELECT 1; SELECT 2", ["SELECT 1", "SELECT 2"]),
        ("SELECT 1;;; ;", ["SELECT 1"]),
        ("  -- only a comment\n", []),
        ("SELECT 'a;b'; SELECT 2", ["SELECT 'a;b'", "SELECT 2"]),
        ("SELECT $$a;b$$; SELECT $t$;$t$", ["SELECT $$a;b$$", "SELECT $t$;$t$"]),
        ("SELECT E'\\';'; SELECT 2", ["SELECT E'\\';'", "SELECT 2"]),
        ("SELECT 'a\\'; SELECT 2", ["SELECT 'a\\'", "SELECT 2"]),
        ("SELECT 1 /* ; /* ; */ ; */; SELECT 2", ["SELECT 1", "SELECT 2"]),
        ('SELECT ";"; SELECT 2', ['SELECT ";"', "SELECT 2"]),
        ("EXPLAIN SELECT ';'; SHOW x", ["EXPLAIN SELECT ';'", "SHOW x"]),
        ("DO $$ BEGIN; END $$; SELECT 1", ["DO $$ BEGIN; END $$", "SELECT 1"]),
    ],
)
def test_split(sql: str, texts: list[str]) -> None:
    assert [p.text for p in split(sql)] == texts


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'open",
        "SELECT $$open",
        "SELECT /* open",
        'SELECT "x',
        # PostgreSQL reads x$$ as an identifier, so the rest would be two more statements.
        "SELECT 1 AS x$$, 1; SELECT notes FROM cases; SELECT $$",
        "SELECT 1 AS x$q$, 1; SELECT notes FROM cases; SELECT $q$",
    ],
)
def test_split_errors(sql: str) -> None:
    with pytest.raises(SplitError):
        split(sql)


@pytest.mark.parametrize(
    ("body", "escape", "out"),
    [
        ("d\\0061t\\+000061", "\\", "data"),
        ("a\\\\b", "\\", "a\\b"),
        ("d!0061ta", "!", "data"),
        ("caf\\00e9", "\\", "café"),
    ],
)
def test_unicode_escapes(body: str, escape: str, out: str) -> None:
    assert unescape_unicode(body, escape) == out


@pytest.mark.parametrize("body", ["\\00", "\\zzzz", "\\0000", "\\+110000", "\\d800"])
def test_bad_unicode_escapes(body: str) -> None:
    with pytest.raises(SplitError):
        unescape_unicode(body)


def test_unicode_identifier_parse_text() -> None:
    (p,) = split('SELECT U&"n\\006Ftes" FROM u&"c!0061ses" UESCAPE \'!\'')
    assert p.parse_text == 'SELECT "notes" FROM "cases"'
    assert p.text.startswith('SELECT U&"n')


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("SELECT 1", "select"),
        ("(SELECT 1)", "select"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "select"),
        ("VALUES (1)", "select"),
        ("TABLE t", "select"),
        ("INSERT INTO t VALUES (1)", "insert"),
        ("UPDATE t SET a = 1", "update"),
        ("DELETE FROM t", "delete"),
        ("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", "merge"),
        ("COPY t TO STDOUT", "copy"),
        ("TRUNCATE t", "truncate"),
        ("CREATE TABLE t (a int)", "create"),
        ("ALTER TABLE t ADD b int", "alter"),
        ("DROP TABLE t", "drop"),
        ("COMMENT ON TABLE t IS 'x'", "comment"),
        ("SET x = 1", "set"),
        ("RESET ALL", "set"),
        ("SHOW ALL", "show"),
        ("EXPLAIN SELECT 1", "explain"),
        ("BEGIN", "begin"),
        ("BEGIN READ ONLY", "begin"),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", "begin"),
        ("SAVEPOINT a", "begin"),
        ("COMMIT", "commit"),
        ("END", "commit"),
        ("RELEASE SAVEPOINT a", "commit"),
        ("PREPARE TRANSACTION 'x'", "commit"),
        ("ROLLBACK", "rollback"),
        ("ABORT", "rollback"),
        ("ROLLBACK TO SAVEPOINT a", "rollback"),
        ("ROLLBACK PREPARED 'x'", "rollback"),
        ("DECLARE c CURSOR FOR SELECT 1", "declare"),
        ("FETCH 10 FROM c", "fetch"),
        ("MOVE NEXT IN c", "fetch"),
        ("CLOSE c", "close"),
        ("PREPARE s AS SELECT 1", "prepare"),
        ("EXECUTE s", "execute"),
        ("DEALLOCATE ALL", "deallocate"),
        ("DISCARD ALL", "discard"),
        ("LISTEN ch", "listen"),
        ("UNLISTEN *", "listen"),
        ("NOTIFY ch, 'x'", "notify"),
        ("DO $$ BEGIN END $$", "do"),
        ("CALL p()", "call"),
        ("VACUUM t", "vacuum"),
        ("ANALYZE t", "analyze"),
        ("GRANT SELECT ON t TO u", "grant"),
        ("REVOKE SELECT ON t FROM u", "revoke"),
        ("LOCK TABLE t", "lock"),
        ("CHECKPOINT", "checkpoint"),
        ("REFRESH MATERIALIZED VIEW v", "refresh"),
        ("FROBNICATE", "unknown"),
        ('"SELECT" 1', "unknown"),
    ],
)
def test_kinds(sql: str, kind: str) -> None:
    assert head(split(sql)[0]).kind == kind


@pytest.mark.parametrize(
    ("sql", "inner", "analyze"),
    [
        ("EXPLAIN SELECT 1", "SELECT 1", False),
        ("EXPLAIN ANALYZE SELECT 1", "SELECT 1", True),
        ("EXPLAIN ANALYSE VERBOSE SELECT 1", "SELECT 1", True),
        ("EXPLAIN (ANALYZE) SELECT 1", "SELECT 1", True),
        ("EXPLAIN (ANALYZE true, BUFFERS) SELECT 1", "SELECT 1", True),
        ("EXPLAIN (ANALYZE off) SELECT 1", "SELECT 1", False),
        ("EXPLAIN (COSTS OFF) SELECT 1", "SELECT 1", False),
        ("DECLARE c BINARY INSENSITIVE SCROLL CURSOR WITH HOLD FOR SELECT 1", "SELECT 1", False),
        ("PREPARE s (int, text[]) AS SELECT $1", "SELECT $1", False),
    ],
)
def test_inner_statements(sql: str, inner: str, analyze: bool) -> None:
    h = head(split(sql)[0])
    assert h.inner == inner and h.analyze is analyze
    assert h.prefix + h.inner == sql


@pytest.mark.parametrize(
    ("sql", "path"),
    [
        ("SET search_path TO a, b", ("a", "b")),
        ('SET search_path = A, "B"', ("a", "B")),
        ("SET SESSION search_path TO a", ("a",)),
        ("SET LOCAL search_path TO a", ("a",)),
        ("SET search_path TO DEFAULT", ("$user", "public")),
        ("SET search_path = 'a, b'", ("a, b",)),
        ('SET search_path TO "$user", public', ("$user", "public")),
        ("RESET search_path", ("$user", "public")),
        ("RESET ALL", ("$user", "public")),
        ("SET work_mem = '64MB'", None),
        ("SHOW search_path", None),
    ],
)
def test_search_path(sql: str, path: tuple[str, ...] | None) -> None:
    assert search_path_of(head(split(sql)[0])) == path
