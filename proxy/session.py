"""Per-client protocol state machine for the relay phase (sans-IO).

Theory of operation
-------------------
After startup, a session sits between one client and one upstream backend.
`client_data(bytes)` and `server_data(bytes)` take what arrived on either
leg and return a list of actions (see `actions.py`) for the I/O layer to
carry out in order. Nothing here blocks or touches a socket.

Client side: frames are processed one at a time. A Query or Parse stops
processing with a `Decide` action; the I/O layer asks the hooks and calls
`decided(admission)`, which forwards (possibly rewritten) SQL or queues a
refusal and goes on with the buffered frames. Everything else is relayed
as its raw bytes.

Every run that can return rows is admitted by the hooks (`Hooks.execute`),
whatever made it: a protocol Execute of a portal, of a cursor DECLAREd in
SQL, or of a portal bound to a statement PREPAREd in SQL; EXECUTE and FETCH
in a Query or a Parse. Names made in SQL are tracked in named.py; a Bind,
Execute, Describe, EXECUTE or FETCH naming something the session never saw
made is put to the hooks as `Unknown`, which refuse it under a policy. The
runs' admission is in session_runs.py.

Server side (session_upstream.py): every forwarded client message that
expects replies pushes an entry on `queue`, the replies the upstream owes
us, in order (pgdog's expected-reply queue). A refusal is an entry (kind
`!`) in the same queue, so its ErrorResponse reaches the client exactly
where PostgreSQL would have put it, behind replies still owed for earlier
pipelined messages. The refused message itself never goes upstream: in its
place goes one sure to fail without side effects (a syntax error, or an
Execute of a portal nobody has), and its ErrorResponse is swapped for the
refusal. So the upstream fails the transaction exactly as it would for any
error: an implicit transaction's earlier statements roll back, an explicit
one is left aborted, and ReadyForQuery stays true to the upstream.

The upstream stream is scanned by message header only. Runs of messages
that need no attention (DataRow above all) are forwarded as one slice of
the read buffer; per DataRow the work is reading the 5-byte header and
bumping two counters. When a statement has stream limits and crosses one,
the session stops forwarding, asks for an upstream cancel, drops the rest
of that statement's output and sends a ResultLimit error in place of its
completion; like any extended-protocol error, the rest of the batch up to
Sync is discarded, and so is whatever the upstream still sends for it
(the cancel's 57014, or replies if the cancel came too late). A portal's
Executes and a cursor's FETCHes share one count, so fetching in pages does
not reset a cap.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import replace

from proxy import messages as m
from proxy.actions import Action, Close, Decide, Plan, Running, Throttle, ToServer
from proxy.encodings import EncodingError
from proxy.errors import ProtocolViolation, ProxyError
from proxy.gucs import PURPOSE, SessionSettings
from proxy.hooks import Admission
from proxy.identity import SessionFacts
from proxy.ledger.watch import Shape
from proxy.named import ExecuteCheck, Held, Names, QueryRuns
from proxy.replies import Entry, FunctionCall, for_portal
from proxy.session_runs import RunsSide
from proxy.textmode import parser_hazard
from proxy.transcode import TextCodec, UnsettledEncoding
from proxy.watching import Watching
from proxy.wire import DEFAULT_MAX_MESSAGE, Frame, FrameReader

# Sent upstream in place of a refused simple Query or FunctionCall: it fails at
# raw parsing, before any lookup or execution, and names the reason in the server log.
REFUSED_QUERY = "OVERSIGHT REFUSED THIS STATEMENT"


class Session(RunsSide):
    def __init__(
        self,
        facts: SessionFacts,
        *,
        max_message: int = DEFAULT_MAX_MESSAGE,
        watching: Watching | None = None,
    ) -> None:
        self.facts = facts
        self.watching = watching  # the subject ledger's watched columns (session_seen.py)
        self.portal_shapes: dict[str, Shape] = {}
        # The server's search_path, transactions included; the startup value is what RESET restores.
        self.settings = SessionSettings.start(
            {"search_path": facts.search_path, PURPOSE: (facts.purpose,)}
        )
        self.status = b"I"  # last transaction status the upstream reported
        self.queue: deque[Entry] = deque()
        self.statements: dict[str, Plan] = {}
        self.portals: dict[str, Plan] = {}
        self.parameters: dict[str, str] = {}
        self.text = TextCodec(self.parameters)  # client_encoding as the server applies it
        self._stalled: Frame | None = None  # statement text held until the encoding is known
        self.names = Names()  # statements PREPAREd and cursors DECLAREd in SQL
        self._client = FrameReader(max_message)
        self._sbuf = b""  # a partial upstream message carried to the next read
        # The message awaiting a decision of the hooks.
        self._waiting: m.Parse | FunctionCall | ExecuteCheck | Held | QueryRuns | str | None = None
        self.params: dict[str, tuple[str, ...]] = {}  # portal -> bound values, when wanted
        self._discard = False  # drop client messages until Sync (after an error)
        self._held = False  # cancel in flight: hold client messages back
        self._cutting: Running | None = None  # statement being cut off
        self._drain = False  # extended batch cut off: drop server replies until ReadyForQuery
        self._copy_in = False  # upstream in COPY FROM STDIN: it ignores Sync and Flush
        # Executed in place of a refused extended-protocol message: a portal name
        # the client cannot guess, so the Execute always fails (34000).
        self._nowhere = f"oversight-refused-{secrets.token_hex(8)}"
        self.closed = False
        self.upstream_fatal = False  # the upstream said why it is going away

    # ------------------------------------------------------------ client side

    def client_data(self, data: bytes) -> list[Action]:
        self._client.feed(data)
        return self._pump()

    def decided(self, adm: Admission, decide_s: float = 0.0) -> list[Action]:
        """Answer to the last `Decide`: forward the statement or queue its refusal."""
        waiting, self._waiting = self._waiting, None
        out: list[Action] = []
        if isinstance(waiting, m.Parse):
            plan = Plan(waiting.sql, adm, True, decide_s, self.text.name)
            text, error = self.text.upstream(adm, waiting.sql)
            if error is not None:
                self._refuse(Running(plan), error, out, ready=False)
                self._discard = True
            else:
                if adm.delay > 0:
                    out.append(Throttle(adm.delay))
                prev = self.statements.get(waiting.name)
                self.statements[waiting.name] = plan
                out.append(ToServer(m.parse(waiting.name, text, waiting.param_types)))
                self.queue.append(Entry(b"P", plan=plan, name=waiting.name, prev=prev))
        elif isinstance(waiting, ExecuteCheck):
            self._run_admitted(waiting, adm, decide_s, out)
        elif isinstance(waiting, Held):
            self._held_admitted(waiting, adm, out)
        elif isinstance(waiting, QueryRuns):
            self._query_run_admitted(waiting, adm, decide_s, out)
        elif isinstance(waiting, FunctionCall):
            plan = Plan(f"<function call oid={waiting.oid}>", adm, True, decide_s, self.text.name)
            if adm.error is not None:
                self._refuse(Running(plan), adm.error, out, ready=True)
            else:
                out.append(ToServer(waiting.raw))
                self.text.forwarded(b"F")
                self.queue.append(Entry(b"F", stmts=deque([Running(plan)])))
        elif isinstance(waiting, str):
            plan = Plan(waiting, adm, False, decide_s, self.text.name)
            error = self.text.upstream(adm, waiting)[1]  # checked before any run is asked
            if error is not None:
                self._refuse(Running(plan), error, out, ready=True)
            else:
                self._next_run(QueryRuns(plan, sorted(adm.effects)), out)
        out += self._pump()
        return out

    def cancel_done(self) -> list[Action]:
        self._held = False
        return self._pump()

    def _refuse(self, stmt: Running, error: ProxyError, out: list[Action], *, ready: bool) -> None:
        """Refuse `stmt` with `error` by way of a message the upstream is sure to fail.

        `ready`: the refused message was a simple Query or FunctionCall, which
        the upstream answers with ReadyForQuery; otherwise an extended-protocol
        message, after which it skips to Sync.
        """
        stmt.blocked = error
        stmt.error = f"{error.sqlstate}: {error.message}"
        stand_in = m.query(REFUSED_QUERY) if ready else m.execute(self._nowhere)
        out.append(ToServer(stand_in))
        if ready:
            self.text.forwarded(b"Q")
        refusal = m.error_response(error.fields(), encode=self.text.codec.write)
        self.queue.append(Entry(b"!", stmts=deque([stmt]), ready=ready, synthetic=refusal))

    def _pump(self) -> list[Action]:
        out: list[Action] = []
        while self._waiting is None and not self._held and not self.closed:
            f = self._stalled
            if f is not None and self.text.uncertain:
                break  # the server has yet to say which encoding its text is in
            self._stalled = None
            try:
                f = f or next(self._client, None)
                if f is None:
                    break
                t, body = f.type, f.body
                if self.text.uncertain and not self._discard and self._reads_text(t, body):
                    if self.text.resolving:
                        self._stalled = f
                        break
                    self._refuse_text(t, body, UnsettledEncoding(), out)
                    continue
                try:
                    self._on_client(t, body, f.raw, out)
                except EncodingError as e:
                    self._refuse_text(t, body, e, out)
            except ProtocolViolation as e:
                return self._close(out, e)
        return out

    def server_data(self, data: bytes) -> list[Action]:
        out = super().server_data(data)
        if self._stalled is not None and not self.text.uncertain:
            out += self._pump()  # the encoding is known again: read on
        return out

    def _reads_text(self, t: bytes, body: bytes) -> bool:
        """Does the proxy decode text from this message (statement text, bound values)?"""
        if t == b"B":
            plan = self.statements.get(m.parse_bind_names(body)[1])
            return plan is not None and plan.admission.per_execute
        return t in b"QP"

    def _refuse_text(self, t: bytes, body: bytes, error: ProxyError, out: list[Action]) -> None:
        """Refuse a message whose text cannot be read as the server will read it."""
        read = self.text.codec.read
        shown = "<bind>"
        if t in b"QP":
            shown = m.parse_query(body, read) if t == b"Q" else m.parse_parse(body, read).sql
        adm = Admission(action="block", error=error, reason=error.message)
        plan = Plan(shown, adm, t != b"Q", encoding=self.text.name)
        self._refuse(Running(plan), error, out, ready=t == b"Q")
        self._discard = t != b"Q"

    def _on_client(self, t: bytes, body: bytes, raw: bytes, out: list[Action]) -> None:
        if t == b"X":
            self.closed = True
            out.append(ToServer(raw))
            out.append(Close())
            return
        if t in b"cf":
            self._copy_in = False
        if self._discard and t != b"S":
            return  # PostgreSQL ignores everything until Sync after an error
        if t in b"dcf":  # COPY data from the client: relay untouched
            out.append(ToServer(raw))
        elif self._copy_in and t in b"SH":
            out.append(ToServer(raw))  # ignored by the upstream mid-COPY: expect no reply
        elif t == b"Q":
            self._waiting = m.parse_query(body, self.text.codec.decode)
            out.append(Decide(self._waiting, extended=False))
        elif t == b"P":
            self._waiting = m.parse_parse(body, self.text.codec.decode)
            parse = self._waiting
            out.append(Decide(parse.sql, extended=True, param_types=parse.param_types))
        elif t == b"B":
            portal, stmt = m.parse_bind_names(body)
            plan = self.statements.get(stmt) or self.names.statement(stmt)
            if plan is None:
                self._ask_unknown(Held(t, raw, portal, stmt), out)
                return
            self.portals[portal] = for_portal(plan)
            self._seen_bind(portal, plan, body)
            if plan.admission.per_execute:
                self.params[portal] = m.parse_bind_params(body, self.text.codec.read)
            out.append(ToServer(raw))
            self.queue.append(Entry(b"B"))
        elif t == b"E":
            self._execute(m.parse_execute(body)[0], raw, out)
        elif t in (b"D", b"C"):
            kind, name = m.parse_target(body)
            if t == b"C" and kind == b"S":
                self.names.drop_statement(name, self.statements)
            elif t == b"C":
                self.names.drop_portal(name, self.portals)
                self.params.pop(name, None)
                self.portal_shapes.pop(name, None)
            elif not self._known(kind, name):
                self._ask_unknown(Held(t, raw, "", name, cursor=kind != b"S"), out)
                return
            out.append(ToServer(raw))
            shape = None
            if t == b"D":
                plan = self.statements.get(name) or self.names.statement(name)
                shape = self._seen_describe(kind, name, plan)
            self.queue.append(Entry(t, shape=shape))
        elif t == b"S":
            self._discard = False
            out.append(ToServer(raw))
            self.text.forwarded(b"S")
            self.queue.append(Entry(b"S"))
        elif t == b"H":
            out.append(ToServer(raw))
        elif t == b"F":
            # A fast-path call runs a function by OID, out of the SQL parser's
            # sight: the hooks decide on it like a statement.
            oid = m.Reader(body).i32()
            self._waiting = FunctionCall(oid, raw)
            out.append(Decide(f"<function call oid={oid}>", extended=True, function_oid=oid))
        else:
            raise ProtocolViolation(f"unexpected message type {t!r} from client")

    def _close(self, out: list[Action], error: ProxyError | None) -> list[Action]:
        self.closed = True
        out.append(Close(error))
        return out

    def _on_parameter(self, name: str, value: str) -> str | None:
        """Track a ParameterStatus; say why it ends the session, if it must."""
        self.parameters[name] = value
        if name == "application_name":
            self.facts = replace(self.facts, application=value)
        # SET and set_config() of these are refused up front; this catches any
        # other way (a function the rules allow), at the latest at the next Sync.
        return parser_hazard(name, value) or self.text.reported(name, value)

    # ------------------------------------------------------------ named runs
