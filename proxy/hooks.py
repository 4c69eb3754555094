"""The seams later capabilities plug into: a statement decider and a stream observer.

The session calls `Hooks.decide` for every simple Query and every Parse before
anything reaches the upstream, and `Hooks.execute` for every run of a named
statement or cursor (a protocol Execute, SQL EXECUTE, FETCH), and installs
the returned `Admission.limits` on the statement's result stream. All default
to "allow everything", which makes Oversight a plain auditing relay.

Hooks are async because some of them consult shared state (Redis-backed
budgets) before a statement may run; the pure parts (policy) are sync and
cached underneath.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from proxy.errors import ProxyError
from proxy.gucs import Change
from proxy.identity import SessionFacts
from proxy.ledger.tally import Tally

Action = Literal["allow", "rewrite", "block", "throttle"]


@dataclass(slots=True)
class StreamLimits:
    """Caps on one statement's result stream, enforced by the session per message header.

    Counting is DataRow ('D') and CopyData ('d') messages from the upstream and
    their wire bytes. At a cap the session stops forwarding, cancels the
    upstream query and sends `error` (a ResultLimit) in place of completion.
    """

    max_rows: int | None = None
    max_bytes: int | None = None
    rule: str = ""
    # Already streamed by earlier runs on the same cursor or portal (the session
    # counts a FETCH loop or a suspended portal's pages), so the cap holds across them.
    used_rows: int = 0
    used_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Effect:
    """What one statement does to the session's SQL-level names (see proxy/named.py).

    `op`: "prepare" / "declare" define `name`; "run" runs the statement
    (EXECUTE) or cursor (FETCH) `name`; "close" (CLOSE) and "deallocate"
    drop `name`, or every one when `name` is None; "discard" is DISCARD ALL.
    """

    op: Literal["prepare", "declare", "run", "close", "deallocate", "discard"]
    name: str | None = None
    cursor: bool = False  # run: FETCH of a cursor, not EXECUTE of a statement
    hold: bool = False  # declare: WITH HOLD, survives the end of its transaction
    params: tuple[str, ...] = ()  # run: EXECUTE's argument values, for the detectors
    text: str = ""  # prepare / declare: the statement as the client wrote it
    # prepare / declare: what each run of the name is admitted as (via `execute`).
    admission: Admission | None = None


@dataclass(frozen=True, slots=True)
class Unknown:
    """Token of the admission `execute` gets for a name the session never saw created."""

    cursor: bool  # a portal or cursor; else a prepared statement
    name: str


@dataclass(slots=True)
class Admission:
    """What the hooks decided for one statement (or one multi-statement string)."""

    action: Action = "allow"
    sql: str | None = None  # text to send upstream; None = unchanged
    error: ProxyError | None = None  # set when the statement is refused
    delay: float = 0.0  # throttle: seconds to wait before running it
    limits: StreamLimits | None = None
    rules: tuple[str, ...] = ()
    reason: str = ""
    # One dict per statement in the text, merged into its audit record
    # (kind, tables, columns, fingerprint, sql redacted, detector hits...).
    statements: Sequence[dict[str, Any]] = ()
    # Extra fields for the record(s): dry_run, would, detector figures.
    audit: dict[str, Any] = field(default_factory=dict)
    # Opaque per-statement state the hooks want back in `finished`.
    token: Any = None
    # Extended protocol: ask `execute` at the first Execute of every portal
    # bound to this statement, with the Bind values.
    per_execute: bool = False
    # By statement index: what it does to SQL-level prepared statements and cursors.
    effects: dict[int, Effect] = field(default_factory=dict)
    # By statement index: what it does to a tracked setting or the savepoints (proxy/gucs.py).
    changes: Mapping[int, Change] = field(default_factory=dict)
    # By statement index: the subject ledger's `looked_up`, (subject id, column,
    # keyed hash) of each value it searched for (proxy/policy/lookups.py).
    looked_up: dict[int, tuple[tuple[str, str, str], ...]] = field(default_factory=dict)


@dataclass(slots=True)
class StatementResult:
    """What actually happened to a statement the hooks admitted."""

    rows: int
    bytes: int
    duration: float
    error: str | None  # SQLSTATE-prefixed message, or None on success
    cutoff: bool
    # The subject ledger's tally of what it received and searched for (None: nothing).
    subjects: Tally | None = None


class Hooks:
    """Default hooks: allow everything, observe nothing."""

    async def decide(
        self,
        sql: str,
        facts: SessionFacts,
        *,
        extended: bool,
        param_types: tuple[int, ...] | None = None,
    ) -> Admission:
        """A simple Query's text, or a Parse's (`extended`, with the type OIDs it
        declares for its parameters, 0 for unspecified)."""
        return Admission()

    async def execute(
        self, facts: SessionFacts, statement: Admission, params: tuple[str, ...]
    ) -> Admission:
        """One run of a named statement or cursor.

        The first Execute of a portal whose statement was admitted with
        `per_execute` (`statement` is the Parse's or PREPARE's admission,
        `params` the Bind or EXECUTE values); every FETCH or Execute of a
        cursor (`statement` is the DECLARE's admission, then what its first
        run returned). Returns the admission for this execution (and the
        portal's later Executes): it may refuse it (`error`), delay it, cap
        its stream or carry its own token and audit fields. A `statement`
        whose token is `Unknown` names something the session never saw
        created: these hooks let it pass.
        """
        return statement

    async def function_call(self, facts: SessionFacts, oid: int) -> Admission:
        """A fast-path FunctionCall (protocol 'F'): it names a function by OID."""
        return Admission()

    async def throttle(self, facts: SessionFacts, token: Any, rows: int, nbytes: int) -> float:
        """Called between upstream reads while a limited statement streams.

        Returns seconds to pause reading from the upstream (backpressure);
        only called when `Admission.limits` was set.
        """
        return 0.0

    async def finished(
        self, facts: SessionFacts, token: Any, result: StatementResult
    ) -> Sequence[dict[str, Any]]:
        """Called once per admitted statement when it ends (budgets, detectors).

        Returns the hits of detectors that judge a statement by what it did
        (the subject-ledger ones): the recorder adds them to this statement's
        record, after any the admission found, so they are audited and alerted
        on like the others.
        """
        return ()


ALLOW_ALL = Hooks()
