"""What the sans-IO session asks the I/O layer to do, and the statement records it keeps.

The session returns lists of these; `server.py` carries them out in order.
Order matters: a `Finish` (audit the statement) always precedes the bytes
that tell the client the statement is over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from proxy.errors import ProxyError
from proxy.hooks import Admission, StreamLimits
from proxy.ledger.copyout import CopyReader
from proxy.ledger.rows import RowReader
from proxy.ledger.tally import Tally
from proxy.ledger.watch import Shape


@dataclass(slots=True)
class Plan:
    """A decided statement text: what the client sent and what went upstream."""

    sql: str
    admission: Admission
    extended: bool
    decide_s: float = 0.0  # time the hooks took to decide
    encoding: str = "UTF8"  # the client encoding the text arrived in
    shape: Shape | None = None  # a prepared statement: its Describe's answer (ledger)

    @property
    def limits(self) -> StreamLimits | None:
        return self.admission.limits


@dataclass(slots=True)
class Running:
    """One statement execution as the audit log will record it."""

    plan: Plan
    index: int = 0  # position in a multi-statement simple query
    portal: str | None = None
    started: float = field(default_factory=time.monotonic)
    rows: int = 0
    bytes: int = 0
    error: str | None = None
    cutoff: bool = False
    blocked: ProxyError | None = None
    tag: str = ""
    paused: float = 0.0  # seconds its stream was held back by throttling
    # The subject ledger (docs/ledger.md): hashes of the subjects it saw and looked up.
    subjects: Tally | None = None
    reader: RowReader | CopyReader | None = None  # reads its rows' watched keys into `subjects`
    shape: Shape | None = None  # a portal's run: its description, read when its rows start

    @property
    def duration(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True, slots=True)
class ToClient:
    data: bytes


@dataclass(frozen=True, slots=True)
class ToServer:
    data: bytes


@dataclass(frozen=True, slots=True)
class Decide:
    """Ask the hooks about a statement; answer with `Session.decided`."""

    sql: str
    extended: bool
    function_oid: int | None = None  # a fast-path FunctionCall, not SQL
    param_types: tuple[int, ...] | None = None  # a Parse: its declared parameter types
    params: tuple[str, ...] | None = None  # an Execute: its Bind values
    token: Admission | None = None  # an Execute: its statement's admission


@dataclass(frozen=True, slots=True)
class Finish:
    """A statement ended (or was refused): account and audit it before going on."""

    stmt: Running


@dataclass(frozen=True, slots=True)
class Throttle:
    """Pause before forwarding the statement just admitted (throttle action)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class CancelUpstream:
    """Send a CancelRequest for this session's upstream backend; then call `cancel_done`."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the session, after sending `error` to the client if given."""

    error: ProxyError | None = None


Action = ToClient | ToServer | Decide | Finish | Throttle | CancelUpstream | Close
