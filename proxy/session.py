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

Server side: every forwarded client message that expects replies pushes an
entry on `queue`, the replies the upstream owes us, in order (pgdog's
expected-reply queue). A refusal is an entry (kind `!`) in the same queue,
so its ErrorResponse reaches the client exactly where PostgreSQL would have
put it, behind replies still owed for earlier pipelined messages. The
refused message itself never goes upstream: in its place goes one sure to
fail without side effects (a syntax error, or an Execute of a portal nobody
has), and its ErrorResponse is swapped for the refusal. So the upstream
fails the transaction exactly as it would for any error: an implicit
transaction's earlier statements roll back, an explicit one is left
aborted, and ReadyForQuery stays true to the upstream.

The upstream stream is scanned by message header only. Runs of messages
that need no attention (DataRow above all) are forwarded as one slice of
the read buffer; per DataRow the work is reading the 5-byte header and
bumping two counters. When a statement has stream limits and crosses one,
the session stops forwarding, asks for an upstream cancel, drops the rest
of that statement's output and sends a ResultLimit error in place of its
completion; like any extended-protocol error, the rest of the batch up to
Sync is discarded, and so is whatever the upstream still sends for it
(the cancel's 57014, or replies if the cancel came too late). A portal's
Executes share one count, so fetching in pages does not reset a cap.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import replace

from proxy import messages as m
from proxy.actions import (
    Action,
    CancelUpstream,
    Close,
    Decide,
    Finish,
    Plan,
    Running,
    Throttle,
    ToClient,
    ToServer,
)
from proxy.errors import FeatureNotSupported, ProtocolViolation, ProxyError, ResultLimit
from proxy.hooks import Admission
from proxy.identity import SessionFacts
from proxy.policy.textmode import parser_hazard
from proxy.replies import (
    Entry,
    ExecuteCheck,
    FunctionCall,
    for_portal,
    next_stmt,
    room,
    statement_info,
    undo_parse,
)
from proxy.wire import DEFAULT_MAX_MESSAGE, FrameReader, unpack_len

D, d = 68, 100  # DataRow, CopyData: the only messages counted per row
# Sent upstream in place of a refused simple Query or FunctionCall: it fails at
# raw parsing, before any lookup or execution, and names the reason in the server log.
REFUSED_QUERY = "OVERSIGHT REFUSED THIS STATEMENT"
ASYNC = frozenset(b"SNA")  # ParameterStatus, Notice, Notification: may come any time


class Session:
    def __init__(self, facts: SessionFacts, *, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.facts = facts
        self.status = b"I"  # last transaction status the upstream reported
        self.queue: deque[Entry] = deque()
        self.statements: dict[str, Plan] = {}
        self.portals: dict[str, Plan] = {}
        self.parameters: dict[str, str] = {}
        self._client = FrameReader(max_message)
        self._sbuf = b""  # a partial upstream message carried to the next read
        # The message awaiting a decision of the hooks.
        self._waiting: m.Parse | FunctionCall | ExecuteCheck | str | None = None
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
            plan = Plan(waiting.sql, adm, extended=True, decide_s=decide_s)
            if adm.error is not None:
                self._refuse(Running(plan), adm.error, out, ready=False)
                self._discard = True
            else:
                if adm.delay > 0:
                    out.append(Throttle(adm.delay))
                sql = adm.sql if adm.sql is not None else waiting.sql
                prev = self.statements.get(waiting.name)
                self.statements[waiting.name] = plan
                out.append(ToServer(m.parse(waiting.name, sql, waiting.param_types)))
                self.queue.append(Entry(b"P", plan=plan, name=waiting.name, prev=prev))
        elif isinstance(waiting, ExecuteCheck):
            plan = waiting.plan
            if adm is not plan.admission:
                plan = Plan(plan.sql, adm, extended=True, decide_s=plan.decide_s + decide_s)
                if self.portals.get(waiting.portal) is waiting.plan:
                    # The portal's later Executes (a suspended portal) continue this run.
                    self.portals[waiting.portal] = plan
            stmt = Running(plan, portal=waiting.portal)
            if adm.error is not None:
                self._refuse(stmt, adm.error, out, ready=False)
                self._discard = True
            else:
                if adm.delay > 0:
                    out.append(Throttle(adm.delay))
                out.append(ToServer(waiting.raw))
                self.queue.append(Entry(b"E", stmts=deque([stmt])))
        elif isinstance(waiting, FunctionCall):
            plan = Plan(f"<function call oid={waiting.oid}>", adm, True, decide_s=decide_s)
            if adm.error is not None:
                self._refuse(Running(plan), adm.error, out, ready=True)
            else:
                out.append(ToServer(waiting.raw))
                self.queue.append(Entry(b"F", stmts=deque([Running(plan)])))
        elif isinstance(waiting, str):
            plan = Plan(waiting, adm, extended=False, decide_s=decide_s)
            if adm.error is not None:
                self._refuse(Running(plan), adm.error, out, ready=True)
            else:
                if adm.delay > 0:
                    out.append(Throttle(adm.delay))
                n = max(1, len(adm.statements))
                stmts = deque(Running(plan, index=i) for i in range(n))
                out.append(ToServer(m.query(adm.sql if adm.sql is not None else waiting)))
                self.queue.append(Entry(b"Q", stmts=stmts, plan=plan, count=n))
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
        refusal = m.error_response(error.fields())
        self.queue.append(Entry(b"!", stmts=deque([stmt]), ready=ready, synthetic=refusal))

    def _pump(self) -> list[Action]:
        out: list[Action] = []
        while self._waiting is None and not self._held and not self.closed:
            try:
                f = next(self._client, None)
            except ProtocolViolation as e:
                return self._close(out, e)
            if f is None:
                break
            t, body = f.type, f.body
            try:
                self._on_client(t, body, f.raw, out)
            except ProtocolViolation as e:
                return self._close(out, e)
        return out

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
            self._waiting = m.parse_query(body)
            out.append(Decide(self._waiting, extended=False))
        elif t == b"P":
            self._waiting = m.parse_parse(body)
            out.append(Decide(self._waiting.sql, extended=True))
        elif t == b"B":
            portal, stmt = m.parse_bind_names(body)
            plan = self.statements.get(stmt)
            if plan is not None:
                self.portals[portal] = for_portal(plan)
                if plan.admission.per_execute:
                    self.params[portal] = m.parse_bind_params(body)
            out.append(ToServer(raw))
            self.queue.append(Entry(b"B"))
        elif t == b"E":
            portal, _ = m.parse_execute(body)
            plan = self.portals.get(portal) or Plan(f"<portal {portal!r}>", Admission(), True)
            if plan.admission.per_execute:
                # Values bound to $n are what lookup and paging detectors need.
                params = self.params.get(portal, ())
                self._waiting = ExecuteCheck(portal, plan, params, raw)
                out.append(Decide(plan.sql, extended=True, params=params, token=plan.admission))
                return
            out.append(ToServer(raw))
            self.queue.append(Entry(b"E", stmts=deque([Running(plan, portal=portal)])))
        elif t in (b"D", b"C"):
            kind, name = m.parse_target(body)
            if t == b"C":
                (self.statements if kind == b"S" else self.portals).pop(name, None)
                if kind != b"S":
                    self.params.pop(name, None)
            out.append(ToServer(raw))
            self.queue.append(Entry(t))
        elif t == b"S":
            self._discard = False
            out.append(ToServer(raw))
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

    # ------------------------------------------------------------ server side

    def server_data(self, data: bytes) -> list[Action]:
        # Scan the immutable chunk itself; only a partial message at its end is
        # kept. A chunk that ends on a message boundary and needs no attention
        # is forwarded as the very same bytes object, with no copy.
        buf = self._sbuf + data if self._sbuf else data
        self._sbuf = b""
        out: list[Action] = []
        n = len(buf)
        pos = start = 0  # buf[start:pos] is a run of messages to forward as is
        rows = nbytes = 0  # counted for `stmt` in this run, written back at control points
        head = self.queue[0] if self.queue else None
        stmt = head.stmts[0] if head and head.stmts else None
        room_rows, room_bytes = room(stmt)
        cutting = self._dropping(head)
        while n - pos >= 5:
            t = buf[pos]
            end = pos + 1 + unpack_len(buf, pos + 1)[0]
            if end > n:
                break
            if t in (D, d):
                if cutting:  # drop the rest of output being cut off
                    if start < pos:
                        out.append(ToClient(buf[start:pos]))
                    start = end
                else:
                    if stmt is None:
                        if head is None or head.kind != b"Q":
                            pos = end
                            continue
                        stmt = next_stmt(head)
                        room_rows, room_bytes = room(stmt)
                    rows += 1
                    nbytes += end - pos
                    if rows > room_rows or nbytes > room_bytes:
                        rows -= 1
                        nbytes -= end - pos
                        if start < pos:
                            out.append(ToClient(buf[start:pos]))
                        start = end
                        cutting = True
                        self._cutting = stmt
                        self._held = True
                        out.append(CancelUpstream())
                pos = end
                continue
            if t in ASYNC:
                if t == 83:  # ParameterStatus
                    k, v = m.parse_parameter_status(buf[pos + 5 : end])
                    hazard = self._on_parameter(k, v)
                    if hazard is not None:
                        # Statements are no longer read as the server reads them:
                        # forward nothing more, end the session.
                        if start < pos:
                            out.append(ToClient(buf[start:pos]))
                        return self._close(out, FeatureNotSupported(f"oversight: {hazard}"))
                pos = end
                continue
            # A message that may end a statement or an entry: handle it alone.
            if stmt is not None:
                stmt.rows += rows
                stmt.bytes += nbytes
            rows = nbytes = 0
            if start < pos:
                out.append(ToClient(buf[start:pos]))
            self._on_server(bytes((t,)), buf[pos + 5 : end], buf[pos:end], out)
            pos = start = end
            head = self.queue[0] if self.queue else None
            stmt = head.stmts[0] if head and head.stmts else None
            room_rows, room_bytes = room(stmt)
            cutting = self._dropping(head)
        if stmt is not None:
            stmt.rows += rows
            stmt.bytes += nbytes
        if start < pos:
            out.append(ToClient(buf[start:pos]))
        if pos < n:
            self._sbuf = buf[pos:]
        return out

    def _dropping(self, head: Entry | None) -> bool:
        """Is upstream output now being thrown away (a cut-off statement or batch)?"""
        if self._cutting is not None or self._drain:
            return True
        return head is not None and (head.aborted or head.kind == b"!")

    def current(self) -> Running | None:
        """The statement whose output is streaming now, if any."""
        head = self.queue[0] if self.queue else None
        return head.stmts[0] if head and head.stmts else None

    def _on_parameter(self, name: str, value: str) -> str | None:
        """Track a ParameterStatus; say why it ends the session, if it must."""
        self.parameters[name] = value
        if name == "application_name":
            self.facts = replace(self.facts, application=value)
        # SET and set_config() of these are refused up front; this catches any
        # other way (a function the rules allow), at the latest at the next Sync.
        return parser_hazard(name, value)

    def _on_server(self, t: bytes, body: bytes, raw: bytes, out: list[Action]) -> None:
        fields = m.error_fields(body) if t == b"E" else {}
        # V is never translated (S is, under lc_messages).
        if fields.get("V", fields.get("S")) in ("FATAL", "PANIC"):
            self.upstream_fatal = True
        q = self.queue
        head = q[0] if q else None
        if head is None:
            out.append(ToClient(raw))  # e.g. a FATAL on admin shutdown
            return
        kind = head.kind
        if self._drain:
            if t != b"Z":
                return  # the rest of a cut-off batch, or the cancel's 57014
            self._drain = False
        if kind == b"!":
            self._on_refusal(head, t, body, raw, out)
            return
        if head.aborted and t != b"Z":
            self._drop_statement_end(head, t, body, out)
            return
        if self._cutting is not None and head.stmts and head.stmts[0] is self._cutting:
            if t in b"CIsE":
                self._finish_cut(head, out)
            return  # drop everything else of the statement being cut
        if t in b"CE":
            self._copy_in = False
        if t == b"E":
            error = f"{fields.get('C', '?????')}: {fields.get('M', '')}"
            if kind == b"Q" and not head.stmts:
                next_stmt(head)  # a statement past those the hooks counted failed
            if head.stmts:
                s = head.stmts.popleft()
                s.error = error
                out.append(Finish(s))
            out.append(ToClient(raw))
            if kind in b"QFS":
                return  # the rest of a failed string is audited at its ReadyForQuery
            failed = q.popleft()
            self._skip_to_sync(out)
            undo_parse(self.statements, failed)
            return
        if t == b"Z":
            if kind in b"QSF":
                self._ready(body, out)  # audits what never ran before the client hears
            out.append(ToClient(raw))
            if kind in b"QSF":
                self.queue.popleft()
            return
        if t in b"GH" and kind in b"QE":
            # COPY: the upstream ignores Sync and Flush while copying in, so a
            # Sync the client sent right behind this Execute gets no reply.
            self._copy_in = t == b"G"
            while self._copy_in and len(q) > 1 and q[1].kind == b"S":
                del q[1]
        if (kind in b"QE" and t in b"CIs") or (kind == b"F" and t == b"V"):
            if t == b"s":
                head.stmts[0].tag = "suspended"
            self._complete(head, body if t == b"C" else b"", out)
            out.append(ToClient(raw))
            if kind == b"E":
                self.queue.popleft()
            return
        out.append(ToClient(raw))
        if (
            (kind == b"P" and t == b"1")
            or (kind == b"B" and t == b"2")
            or (kind == b"D" and t in b"Tn")
            or (kind == b"C" and t == b"3")
        ):
            self.queue.popleft()

    def _on_refusal(
        self, head: Entry, t: bytes, body: bytes, raw: bytes, out: list[Action]
    ) -> None:
        """Replies to a refused message's stand-in: its error becomes the refusal."""
        if t in b"CEIs" and head.stmts:  # E; the others only if the stand-in somehow ran
            out.extend(Finish(s) for s in head.stmts)
            head.stmts.clear()
            out.append(ToClient(head.synthetic))
            if not head.ready:
                self.queue.popleft()
                self._skip_to_sync(out)
        elif t == b"Z" and head.ready:
            self.status = body[:1] or b"I"
            out.append(ToClient(raw))
            self.queue.popleft()

    def _complete(self, head: Entry, tag: bytes, out: list[Action]) -> None:
        if not head.stmts:
            next_stmt(head)  # more results than the hooks counted (they need not split)
        s = head.stmts.popleft()
        s.tag = s.tag or tag.rstrip(b"\0").decode("ascii", "replace")
        lim = s.plan.limits
        if s.portal is not None and lim is not None:
            # Later Executes of this portal continue this count (see _for_portal).
            lim.used_rows += s.rows
            lim.used_bytes += s.bytes
        out.append(Finish(s))
        sp = statement_info(s).get("search_path")
        if isinstance(sp, list | tuple) and not s.error:
            self.facts = replace(self.facts, search_path=tuple(sp))

    def _ready(self, body: bytes, out: list[Action]) -> None:
        self.status = body[:1] or b"I"
        head = self.queue[0]
        for s in head.stmts:  # statements of a query string that never ran
            s.error = s.error or "not executed: an earlier statement in the string failed"
            out.append(Finish(s))
        head.stmts.clear()

    def _skip_to_sync(self, out: list[Action]) -> None:
        """After an error in an extended batch the upstream skips to Sync; so do we."""
        q = self.queue
        skipped: list[Entry] = []
        while q and q[0].kind != b"S":
            e = q.popleft()
            skipped.append(e)
            for s in e.stmts:
                s.error = s.error or "not executed: an earlier message in the batch failed"
                out.append(Finish(s))
        for e in reversed(skipped):
            undo_parse(self.statements, e)
        if not q:
            self._discard = True

    def _finish_cut(self, head: Entry, out: list[Action]) -> None:
        s = head.stmts.popleft()
        self._cutting = None
        lim = s.plan.limits
        assert lim is not None
        s.cutoff = True
        err = (
            ResultLimit(lim.max_rows, lim.rule)
            if lim.max_rows is not None and s.rows + lim.used_rows >= lim.max_rows
            else ResultLimit(lim.max_bytes or 0, lim.rule, unit="bytes")
        )
        s.error = f"{err.sqlstate}: {err.message}"
        out.append(Finish(s))
        out.append(ToClient(m.error_response(err.fields())))
        if head.kind == b"Q":
            head.aborted = True
            for rest in head.stmts:
                rest.error = "not executed or discarded: an earlier statement was cut off"
            return
        self.queue.popleft()
        self._skip_to_sync(out)
        # Whether the cancel hit (57014) or came too late, nothing more of this
        # batch reaches the client: it has its error and waits for ReadyForQuery.
        self._drain = True

    def _drop_statement_end(self, head: Entry, t: bytes, body: bytes, out: list[Action]) -> None:
        if t in b"CIE" and len(t) == 1 and head.stmts:
            out.append(Finish(head.stmts.popleft()))

    # ------------------------------------------------------------ ending

    def interrupted(self, reason: str) -> list[Action]:
        """The session is going away: audit every statement still owed a reply."""
        out: list[Action] = []
        for e in self.queue:
            for s in e.stmts:
                s.error = s.error or reason
                out.append(Finish(s))
        self.queue.clear()
        self.closed = True
        return out
