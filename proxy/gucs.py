"""The session's settings as PostgreSQL holds them, transactions included (issue #12).

The policy engine resolves unqualified names with the session's search_path,
so the proxy's copy must be the server's, not "the last SET that completed".
PostgreSQL (guc.c) keeps, per setting, the value now in force and the value a
commit keeps; a transaction, and each savepoint in it, remembers both at its
start and restores them when rolled back:

- `SET x` (or `set_config(x, v, false)`): both the current and the kept value.
- `SET LOCAL x` (`set_config(x, v, true)`): the current value only; a commit
  (or the end of an implicit transaction) puts back the kept one.
- `RESET x`, `SET x TO DEFAULT`: a SET to the value the session started with
  (role and database defaults, startup options: what SHOW read at startup).
- `RESET ALL`, `DISCARD ALL`: the same for every tracked setting.
- `SAVEPOINT n` / `RELEASE n` / `ROLLBACK TO n`: a stack of remembered values.
- A simple Query of several statements is one implicit transaction, an
  extended-protocol batch one up to its Sync: an error anywhere rolls back
  the SETs before it. In a transaction block an error leaves it failed ('E');
  its SETs are gone at the ROLLBACK (or the COMMIT, whose tag says ROLLBACK).

`SessionSettings` is driven by what the session sees: each statement's
completion (its CommandComplete tag and the `Change` the engine read from its
text), each error, and ReadyForQuery's transaction status. It is generic over
setting names: `TRACKED` says which ones statements report: search_path and
oversight.purpose (proxy/purpose.py; its value is a 1-tuple, never split).

A value of None means "unknown": something changed the setting in a way the
proxy cannot follow (a computed set_config, a DO block, statements of a
cut-off batch whose completions were dropped). Under a policy, statements are
refused until the client sets the value again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

# Settings whose value the proxy follows. The engine reports changes to these only.
# oversight.purpose (proxy/purpose.py) is one string, never split at commas.
PURPOSE = "oversight.purpose"
TRACKED = frozenset({"search_path", PURPOSE})

Value = tuple[str, ...] | None  # None: unknown to the proxy
Op = Literal["set", "local", "reset_all", "unknown", "savepoint", "release", "rollback_to"]


@dataclass(frozen=True, slots=True)
class Change:
    """What one statement does to a tracked setting or to the savepoint stack.

    op "set"/"local": `name` is the setting, `value` the new value, or None
    for its startup value (RESET, SET ... TO DEFAULT). "unknown": the setting
    changes to a value the proxy cannot read. "savepoint"/"release"/
    "rollback_to": `name` is the savepoint. "reset_all": RESET ALL, DISCARD ALL.
    """

    op: Op
    name: str = ""
    value: tuple[str, ...] | None = None


def set_config_change(args: Sequence[str | None]) -> Change | None:
    """set_config(name, value, is_local) with these literal args (None: not a literal)."""
    if not args or args[0] is None:
        # The setting is computed: it may be any tracked one.
        return Change("unknown", "*")
    name = args[0].strip().lower()
    if name not in TRACKED:
        return None
    if len(args) < 3 or args[1] is None or args[2] is None:
        return Change("unknown", name)
    local = args[2].strip().lower()
    if local not in _BOOLS:
        return Change("unknown", name)
    if name == PURPOSE:
        return Change("local" if _BOOLS[local] else "set", name, (args[1],))
    value = tuple(parse_search_path(args[1]))
    return Change("local" if _BOOLS[local] else "set", name, value)


def parse_search_path(text: str) -> list[str]:
    """A search_path value as the server splits it: `"$user", public, "Odd, Name"` ->
    ['$user', 'public', 'Odd, Name']. Commas inside double quotes do not split, `""`
    inside quotes is one quote, unquoted names are folded to lower case."""
    out: list[str] = []
    name: list[str] = []
    quoted = inside = False
    i = 0
    while i < len(text):
        ch = text[i]
        if inside:
            if ch == '"' and text[i + 1 : i + 2] == '"':
                name.append('"')
                i += 1
            elif ch == '"':
                inside = False
            else:
                name.append(ch)
        elif ch == '"':
            inside = quoted = True
        elif ch == ",":
            _take(out, name, quoted)
            name, quoted = [], False
        elif ch.isspace() and (quoted or not name):
            pass  # around a name, not in it
        else:
            name.append(ch if quoted else ch.lower())
        i += 1
    _take(out, name, quoted)
    return out


def _take(out: list[str], name: list[str], quoted: bool) -> None:
    text = "".join(name) if quoted else "".join(name).rstrip()
    if text or quoted:
        out.append(text)


_BOOLS = {"true": True, "t": True, "on": True, "1": True, "yes": True, "y": True}
_BOOLS |= {"false": False, "f": False, "off": False, "0": False, "no": False, "n": False}


@dataclass(slots=True)
class _Saved:
    """The values in force (and kept by a commit) when a transaction or savepoint began."""

    name: str
    current: dict[str, Value]
    kept: dict[str, Value]


@dataclass(slots=True)
class SessionSettings:
    """Tracked settings of one session, following PostgreSQL's transaction semantics."""

    startup: dict[str, Value]
    current: dict[str, Value] = field(default_factory=dict)
    kept: dict[str, Value] = field(default_factory=dict)  # what a commit keeps
    _top: _Saved | None = None  # the open transaction (implicit or explicit)
    _savepoints: list[_Saved] = field(default_factory=list)
    _failed: bool = False  # the open transaction will roll back

    @classmethod
    def start(cls, startup: Mapping[str, Value]) -> SessionSettings:
        return cls(dict(startup), dict(startup), dict(startup))

    def value(self, name: str) -> Value:
        return self.current.get(name)

    # -- events ------------------------------------------------------------------

    def completed(self, tag: str, change: Change | None) -> None:
        """A statement completed with CommandComplete `tag`; `change` is what its text does."""
        self._open()
        command = tag.split(" ", 1)[0].upper()
        if command == "ROLLBACK":
            if change is not None and change.op == "rollback_to":
                self._rollback_to(change.name)
            else:  # ROLLBACK, or the COMMIT of a failed transaction
                self._end(commit=False)
        elif command == "COMMIT" or tag.upper().startswith("PREPARE TRANSACTION"):
            self._end(commit=True)
        elif change is not None:
            self._apply(change)

    def failed(self) -> None:
        """An error: the open transaction (implicit or explicit) is aborted."""
        self._open()
        self._failed = True

    def unseen(self) -> None:
        """Statements whose completions the session will not see may have SET things.

        Until the transaction ends the values are unknown; a commit keeps them
        unknown, a rollback puts back those of its start, which are known.
        """
        self._open()
        self._set_all_unknown()

    def ready(self, status: bytes) -> None:
        """ReadyForQuery: 'I' ends an implicit transaction; 'E' says the block failed."""
        if status == b"E":
            self._open()
            self._failed = True
        elif status == b"I" and self._top is not None:
            self._end(commit=not self._failed)

    # -- transitions ---------------------------------------------------------------

    def _open(self) -> None:
        if self._top is None:
            self._top = _Saved("", dict(self.current), dict(self.kept))

    def _apply(self, c: Change) -> None:
        if c.op == "savepoint":
            self._savepoints.append(_Saved(c.name, dict(self.current), dict(self.kept)))
        elif c.op == "release":
            i = self._find(c.name)
            if i is not None:
                del self._savepoints[i:]
        elif c.op == "reset_all":
            for name in self.startup:
                self._set(name, self.startup[name], local=False)
        elif c.op == "unknown":
            for name in self.startup if c.name == "*" else (c.name,):
                self._set(name, None, local=False)
        elif c.op in ("set", "local"):
            value = c.value if c.value is not None else self.startup.get(c.name)
            self._set(c.name, value, local=c.op == "local")

    def _set(self, name: str, value: Value, *, local: bool) -> None:
        self.current[name] = value
        if not local:
            self.kept[name] = value

    def _find(self, name: str) -> int | None:
        for i in range(len(self._savepoints) - 1, -1, -1):
            if self._savepoints[i].name == name:
                return i
        return None

    def _rollback_to(self, name: str) -> None:
        i = self._find(name)
        if i is None:  # the server said ROLLBACK TO succeeded: the stack is not ours
            self._set_all_unknown()
            return
        saved = self._savepoints[i]
        del self._savepoints[i + 1 :]
        self.current, self.kept = dict(saved.current), dict(saved.kept)
        self._failed = False

    def _end(self, *, commit: bool) -> None:
        top = self._top
        assert top is not None
        if commit:
            self.current = dict(self.kept)  # SET LOCAL ends with its transaction
        else:
            self.current, self.kept = dict(top.current), dict(top.kept)
        self._top, self._savepoints, self._failed = None, [], False

    def _set_all_unknown(self) -> None:
        for name in set(self.current) | set(self.startup):
            self.current[name] = self.kept[name] = None
