"""The session's client encoding, followed exactly when the server applies it.

The server reads each message in the client_encoding in force when it reads
it. A change (SET client_encoding or NAMES, RESET, DISCARD ALL,
set_config(), and the end of a transaction or a failed statement that
undoes one) takes effect when the server executes it, so text pipelined
behind it is already in the new encoding, and the proxy learns the
outcome only from the ParameterStatus the server sends before the next
ReadyForQuery. So once a message that may change the encoding goes
upstream, the encoding is uncertain until that ReadyForQuery; statement
text arriving meanwhile is held back (the server owes the ReadyForQuery
without anything more from the client) or, when it is part of the same
extended-protocol batch (no Sync sent yet), refused: holding it would wait
for a Sync that comes after it.

"May change" over-approximates: any mention of client_encoding or
set_config or a U& escape anywhere in the text (string literals included);
statements the policy engine classified as DO, CALL, EXECUTE, DISCARD or
not understood, and SET statements that say NAMES or RESET; every
fast-path call; and every statement while a change made inside a
transaction block may still be undone. Without the engine's statement
kinds, any RESET, DISCARD, EXECUTE, DO or CALL word, or SET with NAMES,
counts. A change the proxy did not see coming (a function that sets the
encoding) ends the session, as the ParameterStatus backstop always has.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Protocol

from proxy.encodings import UTF8, ClientEncoding, Untranslatable, canonical, lookup
from proxy.errors import ProxyError


class Decided(Protocol):
    """What the hooks decided on a statement (an `Admission`), as far as encoding goes."""

    @property
    def error(self) -> ProxyError | None: ...
    @property
    def sql(self) -> str | None: ...  # the rewrite, if any
    @property
    def rules(self) -> tuple[str, ...]: ...
    @property
    def statements(self) -> Sequence[Mapping[str, Any]]: ...


# Anywhere, strings included: set_config('client_encoding', ...), U&"..." escapes.
_ANYWHERE = re.compile(r"client_encoding|set_config|u&", re.IGNORECASE)
# Keywords: only where the statement kinds are unknown.
_KEYWORDS = re.compile(r"\b(?:reset|discard|execute|do|call)\b", re.IGNORECASE)
_NAMES = re.compile(r"\bnames\b|\breset\b", re.IGNORECASE)  # SET NAMES, RESET ALL
_SET = re.compile(r"\bset\b", re.IGNORECASE)
_CHANGING_KINDS = frozenset({"do", "call", "execute", "discard", "unknown"})


class UnsettledEncoding(ProxyError):
    """Statement text sent in the batch of a change of client_encoding, before its Sync."""

    sqlstate = "0A000"

    def __init__(self) -> None:
        super().__init__(
            "oversight: statement text sent in the same batch after a possible change of "
            "client_encoding",
            hint="Send Sync (end the pipeline) after changing client_encoding.",
        )


@lru_cache(maxsize=2048)
def may_change(sql: str, kinds: tuple[str | None, ...] = ()) -> bool:
    """Could running `sql` change client_encoding? (Over-approximates; see the module doc.)

    `kinds`: the policy engine's statement kinds for the text, when it gave them.
    """
    if _ANYWHERE.search(sql):
        return True
    if not kinds or None in kinds:  # the hooks did not classify every statement
        return _KEYWORDS.search(sql) is not None or (
            _NAMES.search(sql) is not None and _SET.search(sql) is not None
        )
    if any(k in _CHANGING_KINDS for k in kinds):
        return True
    return "set" in kinds and _NAMES.search(sql) is not None


def kinds_of(adm: Decided) -> tuple[str | None, ...]:
    """The engine's statement kinds for a decided text (None where it gave none)."""
    return tuple([s.get("kind") for s in adm.statements])


class TextCodec:
    """The session's current client encoding and whether it is known right now."""

    def __init__(self, parameters: dict[str, str]) -> None:
        # The session's ParameterStatus record: read at first use (startup
        # fills it before the relay phase) and at every ReadyForQuery.
        self._parameters = parameters
        self._codec: ClientEncoding | None = None
        self._name = "UTF8"  # as the server names it (SQL_ASCII reads in another codec)
        self._sent = 0  # messages forwarded that the server answers with ReadyForQuery
        self._seen = 0  # ReadyForQuery received
        self._until: int | None = None  # uncertain until this many ReadyForQuery
        self._from = 0  # ... since the reply cycle of the first message that may change it
        self._changed = False  # a possible change since the last idle ReadyForQuery
        self._in_block = False  # ... made inside a transaction block, still undoable

    @property
    def codec(self) -> ClientEncoding:
        if self._codec is None:
            self._settle(self._reported() or UTF8)
            assert self._codec is not None
        return self._codec

    @property
    def name(self) -> str:
        """The client encoding the server reads text in now, by PostgreSQL's name."""
        self.codec  # noqa: B018 (settles it at first use)
        return self._name

    def _settle(self, codec: ClientEncoding) -> None:
        self._codec = codec
        reported = self._parameters.get("client_encoding", codec.name)
        self._name = canonical(reported) or codec.name

    @property
    def uncertain(self) -> bool:
        return self._until is not None

    @property
    def resolving(self) -> bool:
        """Will the server settle the uncertainty without more from the client?"""
        return self._until is not None and self._sent >= self._until

    def upstream(self, adm: Decided, sql: str) -> tuple[bytes, ProxyError | None]:
        """What to send for a decided statement, in the client encoding; or why not."""
        if adm.error is not None:
            return b"", adm.error
        try:
            return self.codec.encode(adm.sql if adm.sql is not None else sql), None
        except UnicodeEncodeError:
            return b"", Untranslatable(
                f"oversight: the rewrite by {', '.join(adm.rules) or 'the rules'} cannot be "
                f"written in client encoding {self.name}"
            )

    def forwarded(
        self, kind: bytes, sql: str | None = None, kinds: tuple[str | None, ...] = ()
    ) -> None:
        """Account one message sent upstream: Q, S, F (answered with ReadyForQuery), E.

        `sql` and `kinds`: a statement's text and the engine's statement kinds for it.
        """
        changes = sql is not None and may_change(sql, kinds)
        if kind == b"F" or self._in_block or changes:
            if self._until is None:
                self._from = self._sent + 1
            self._until = self._sent + 1
            self._changed = True
        if kind in b"QSF":
            self._sent += 1

    def ready(self, status: bytes) -> str | None:
        """A ReadyForQuery arrived; say why the session must end, if it must."""
        self._seen += 1
        if status == b"I":
            self._changed = self._in_block = False
        elif self._changed:
            self._in_block = True  # COMMIT, ROLLBACK or any error may undo the change
        if self._until is not None and self._seen >= self._until:
            self._until = None
            codec = self._reported()
            if codec is None:
                return self._unreadable()
            self._settle(codec)
        return None

    def reported(self, name: str, value: str) -> str | None:
        """A ParameterStatus; say why the session must end, if it must."""
        if name not in ("client_encoding", "server_encoding"):
            return None
        now = self._reported()
        if now is None:
            return self._unreadable()
        # A report from a reply cycle before any message that may change the
        # encoding: statement text was read in the old one meanwhile.
        foreseen = self._until is not None and self._seen + 1 >= self._from
        if not foreseen and self._codec is not None and now != self._codec:
            return f"client_encoding changed to {value} in a way the proxy cannot follow"
        return None

    def _reported(self) -> ClientEncoding | None:
        p = self._parameters
        return lookup(p.get("client_encoding", "UTF8"), p.get("server_encoding", "UTF8"))

    def _unreadable(self) -> str:
        p = self._parameters
        return (
            f"client_encoding {p.get('client_encoding')} on a database in "
            f"{p.get('server_encoding')} is not supported by the proxy"
        )
