"""COPY as PostgreSQL reads it; sqlglot 30 models only `COPY ... WITH (options)`.

PostgreSQL's grammar (gram.y, CopyStmt):

    COPY [BINARY] table [(cols)] {FROM|TO} [PROGRAM] file [[USING] DELIMITERS 'c']
        [WITH] options [WHERE cond]
    COPY (query) TO [PROGRAM] file [WITH] options

where file is STDIN, STDOUT or a string, and options is either a parenthesised
generic list `(FORMAT csv, HEADER true, FORCE_QUOTE (a, b), ...)` or the legacy
words `BINARY CSV HEADER FREEZE DELIMITER [AS] 'c' NULL [AS] 's' QUOTE [AS] 'q'
ESCAPE [AS] 'e' ENCODING 'x' FORCE QUOTE cols|* FORCE NOT NULL cols|*
FORCE NULL cols|*`. sqlglot fails on `TO STDOUT (FORMAT csv)` (what asyncpg
sends) and turns legacy words into `WITH (CSV HEADER)`, which PostgreSQL
rejects. So sqlglot parses only `COPY target {FROM|TO} file`; the options are
read here and set on the tree as generic options holding their original text
(`CSV HEADER` becomes `FORMAT csv, HEADER true`), which the generator prints as
`WITH (...)`, a form every supported PostgreSQL accepts. Option values never read
data, so they are not analyzed. Anything outside this grammar, COPY ... WHERE
(sqlglot has no place for the condition) and COPY (INSERT/UPDATE/DELETE ...
RETURNING) TO raise ParseError: the statement is then refused for users with a
policy, and follows `defaults.unparsed` for others.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NoReturn

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError
from sqlglot.tokenizer_core import Token, TokenType

from proxy.policy.split import Piece

# PostgreSQL's Sconst: '...', E'...' and dollar quotes.
_STRINGS = frozenset({TokenType.STRING, TokenType.BYTE_STRING, TokenType.HEREDOC_STRING})
_WORD = re.compile(r"[A-Za-z_\u0080-\U0010ffff][\w$\u0080-\U0010ffff]*")
_FLAGS = {
    "BINARY": ("FORMAT", "binary"),
    "CSV": ("FORMAT", "csv"),
    "HEADER": ("HEADER", "true"),
    "FREEZE": ("FREEZE", "true"),
}
_DML = frozenset({TokenType.INSERT, TokenType.UPDATE, TokenType.DELETE, TokenType.MERGE})
_STRING_OPTS = frozenset({"DELIMITER", "NULL", "QUOTE", "ESCAPE", "ENCODING"})

Option = tuple[str, str | None]  # (name, argument) as PostgreSQL text


class _Reader:
    """A cursor over a statement's tokens that gives back their original text."""

    def __init__(self, tokens: list[Token], source: str, pos: int) -> None:
        self.tokens, self.source, self.pos = tokens, source, pos

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def raw(self, t: Token) -> str:
        return self.source[t.start : t.end + 1]

    def word(self) -> str:
        """The upper-cased keyword at the cursor, "" when it is not an unquoted word."""
        t = self.peek()
        if t is None or t.token_type == TokenType.IDENTIFIER or t.token_type in _STRINGS:
            return ""
        return t.text.upper() if _WORD.fullmatch(self.raw(t)) else ""

    def take_word(self, word: str) -> bool:
        if self.word() == word:
            self.pos += 1
            return True
        return False

    def take(self, kind: TokenType) -> bool:
        t = self.peek()
        if t is not None and t.token_type == kind:
            self.pos += 1
            return True
        return False

    def expect(self, kind: TokenType, what: str) -> None:
        if not self.take(kind):
            self.fail(f"expected {what}")

    def fail(self, why: str) -> NoReturn:
        t = self.peek()
        at = f" at {self.raw(t)!r}" if t is not None else " at the end"
        raise ParseError(f"COPY: {why}{at}")

    def name(self) -> str:
        """An identifier or keyword (ColId / ColLabel), quoted or not."""
        t = self.peek()
        if t is not None and (t.token_type == TokenType.IDENTIFIER or self.word()):
            self.pos += 1
            return self.raw(t)
        self.fail("expected a name")

    def string(self) -> str:
        t = self.peek()
        if t is not None and t.token_type in _STRINGS:
            self.pos += 1
            return self.raw(t)
        self.fail("expected a string")

    def string_or_name(self) -> str:
        t = self.peek()
        return self.string() if t is not None and t.token_type in _STRINGS else self.name()


def parse_copy(piece: Piece, dialect: Dialect) -> exp.Copy:
    """The COPY statement of `piece` as a tree whose params PostgreSQL accepts after WITH."""
    toks = list(piece.tokens)
    binary = len(toks) > 1 and toks[1].token_type == TokenType.BINARY
    start = 2 if binary else 1
    query = start < len(toks) and toks[start].token_type == TokenType.L_PAREN
    at = _direction(toks, start)
    going_in = toks[at].token_type == TokenType.FROM
    r = _Reader(toks, piece.source, at + 1)
    if query and (going_in or binary):
        raise ParseError("COPY: a query is only copied TO, without BINARY")
    if query and start + 1 < len(toks) and toks[start + 1].token_type in _DML:
        raise ParseError("COPY (INSERT/UPDATE/DELETE/MERGE ... RETURNING) TO is not supported")
    program = r.take_word("PROGRAM")
    file = r.peek()
    if file is None or not (file.token_type in _STRINGS or r.word() in ("STDIN", "STDOUT")):
        r.fail("expected STDIN, STDOUT or a file name")
    r.pos += 1
    # sqlglot gets `COPY target {FROM|TO} file`: no BINARY, no PROGRAM, no options.
    skip = {1} if binary else set()
    skip |= {at + 1} if program else set()
    head = [t for i, t in enumerate(toks[: r.pos]) if i not in skip]
    tree = _target(head, piece.source, dialect)
    if bool(tree.args.get("kind")) != going_in:
        raise ParseError("COPY: the parser read the direction differently")
    if program or file.token_type in _STRINGS:
        text = r.raw(file)  # verbatim: sqlglot would print $$x$$ or E'x' as 'x'
        tree.set("files", [exp.Var(this=f"PROGRAM {text}" if program else text)])
    opts: list[Option] = [("FORMAT", "binary")] if binary else []
    opts += _options(r, table=not query)
    tree.set("params", [_param(name, arg) for name, arg in opts])
    return tree


def _direction(toks: list[Token], pos: int) -> int:
    """The index of the FROM or TO after the target (TO and FROM are reserved words)."""
    depth = 0
    for i in range(pos, len(toks)):
        t = toks[i]
        if t.token_type == TokenType.L_PAREN:
            depth += 1
        elif t.token_type == TokenType.R_PAREN:
            depth -= 1
        elif depth == 0 and (t.token_type == TokenType.FROM or _is_to(t)):
            return i
    raise ParseError("COPY: expected FROM or TO")


def _is_to(t: Token) -> bool:
    return t.token_type == TokenType.VAR and t.text.upper() == "TO"  # not "to" nor 'to'


def _target(head: list[Token], source: str, dialect: Dialect) -> exp.Copy:
    """sqlglot's tree for `COPY target {FROM|TO} file`, checked to be read as such."""
    trees = dialect.parser().parse(head, source)
    tree = trees[0] if len(trees) == 1 else None
    if (
        not isinstance(tree, exp.Copy)
        or len(tree.args.get("files") or []) != 1
        or tree.args.get("params")
    ):
        raise ParseError("COPY: the parser did not model the target")
    table = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
    if isinstance(table, exp.Table) and table.args.get("alias") is not None:
        raise ParseError("COPY: a table in COPY takes no alias")
    return tree


def _options(r: _Reader, *, table: bool) -> list[Option]:
    opts: list[Option] = []
    if table and (r.take_word("USING") or r.word() == "DELIMITERS"):
        if not r.take_word("DELIMITERS"):
            r.fail("expected DELIMITERS")
        opts.append(("DELIMITER", r.string()))
    r.take(TokenType.WITH)
    t = r.peek()
    if t is not None and t.token_type == TokenType.L_PAREN:
        opts += _generic(r)
    else:
        opts += _legacy(r)
    if r.peek() is not None:
        r.fail("a WHERE clause is not supported" if r.word() == "WHERE" else "unexpected text")
    return opts


def _generic(r: _Reader) -> list[Option]:
    """`( name [arg] [, ...] )`; arg: a word, string, number, `*`, or `(` words `)`."""
    r.expect(TokenType.L_PAREN, "(")
    opts: list[Option] = []
    while True:
        opts.append((r.name(), _generic_arg(r)))
        if not r.take(TokenType.COMMA):
            break
    r.expect(TokenType.R_PAREN, ", or )")
    return opts


def _generic_arg(r: _Reader) -> str | None:
    t = r.peek()
    if t is None or t.token_type in (TokenType.COMMA, TokenType.R_PAREN):
        return None
    if r.take(TokenType.STAR):
        return "*"
    if r.take(TokenType.L_PAREN):
        return f"({_list(r, r.string_or_name)})"
    sign = ""
    if t.token_type in (TokenType.DASH, TokenType.PLUS):
        sign = r.raw(t)
        r.pos += 1
        t = r.peek()
    if t is not None and t.token_type == TokenType.NUMBER:
        r.pos += 1
        return sign + r.raw(t)
    if sign:
        r.fail("expected a number")
    return r.string_or_name()


def _list(r: _Reader, item: Callable[[], str]) -> str:
    """`a, b, c)`: comma-separated items up to and including the closing parenthesis."""
    items = [item()]
    while r.take(TokenType.COMMA):
        items.append(item())
    r.expect(TokenType.R_PAREN, ", or )")
    return ", ".join(items)


def _legacy(r: _Reader) -> list[Option]:
    """The pre-9.0 option words, each as the generic option PostgreSQL maps it to."""
    opts: list[Option] = []
    while r.peek() is not None and r.word() != "WHERE":
        word = r.word()
        if word in _FLAGS:
            r.pos += 1
            opts.append(_FLAGS[word])
        elif word in _STRING_OPTS:
            r.pos += 1
            if word != "ENCODING":
                r.take(TokenType.ALIAS)
            opts.append((word, r.string()))
        elif word == "FORCE":
            r.pos += 1
            opts.append(_force(r))
        else:
            r.fail("unsupported COPY option")
    return opts


def _force(r: _Reader) -> Option:
    """FORCE QUOTE | FORCE NOT NULL | FORCE NULL, then `*` or a column list."""
    if r.take_word("QUOTE"):
        name = "FORCE_QUOTE"
    elif r.take_word("NOT"):
        if not r.take_word("NULL"):
            r.fail("expected NULL")
        name = "FORCE_NOT_NULL"
    elif r.take_word("NULL"):
        name = "FORCE_NULL"
    else:
        r.fail("expected QUOTE, NOT NULL or NULL")
    if r.take(TokenType.STAR):
        return name, "*"
    cols = [r.name()]
    while r.take(TokenType.COMMA):
        cols.append(r.name())
    return name, f"({', '.join(cols)})"


def _param(name: str, arg: str | None) -> exp.CopyParameter:
    # Vars print their text verbatim: the option is sent as the client wrote it.
    value = exp.Var(this=arg) if arg is not None else None
    return exp.CopyParameter(this=exp.Var(this=name), expression=value)
