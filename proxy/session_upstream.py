"""The upstream half of the session: replies scanned by header, counted, cut off, audited.

`Session` (session.py) is the whole state machine; this mixin holds what it
does with the upstream's bytes, so that each module stays small. Runs of
messages that need no attention (DataRow above all) are forwarded as one
slice of the read buffer; per DataRow the work is reading the 5-byte header
and bumping two counters. A message that may end a statement or an entry of
the expected-reply queue is handled alone (`_on_server`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from proxy import messages as m
from proxy.actions import Action, CancelUpstream, Finish, Plan, Running, ToClient
from proxy.errors import FeatureNotSupported, ProxyError, ResultLimit
from proxy.gucs import PURPOSE, Change, SessionSettings
from proxy.identity import SessionFacts
from proxy.named import Names
from proxy.replies import Entry, next_stmt, room, statement_change, statement_info, undo_parse
from proxy.session_seen import SeenSide
from proxy.transcode import TextCodec
from proxy.wire import unpack_len

D, d = 68, 100  # DataRow, CopyData: the only messages counted per row
ASYNC = frozenset(b"SNA")  # ParameterStatus, Notice, Notification: may come any time


class UpstreamSide(SeenSide):
    """Server-side methods of `Session`; the attributes are the session's."""

    facts: SessionFacts
    settings: SessionSettings
    status: bytes
    queue: deque[Entry]
    statements: dict[str, Plan]
    portals: dict[str, Plan]
    names: Names
    text: TextCodec
    closed: bool
    upstream_fatal: bool
    _sbuf: bytes
    _held: bool
    _discard: bool
    _cutting: Running | None
    _drain: bool
    _copy_in: bool

    def _on_parameter(self, name: str, value: str) -> str | None:
        raise NotImplementedError

    def _close(self, out: list[Action], error: ProxyError | None) -> list[Action]:
        raise NotImplementedError

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
        reader = self._reader_of(stmt)  # None unless its rows carry subjects' keys
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
                        reader = None
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
                    elif reader is not None:
                        reader.row(buf, pos + 5, end)  # the client gets it: its subjects count
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
            if t == 90 and (hazard := self.text.ready(buf[pos + 5 : pos + 6])) is not None:
                if start < pos:  # ReadyForQuery settled the encoding on one it cannot read
                    out.append(ToClient(buf[start:pos]))
                return self._close(out, FeatureNotSupported(f"oversight: {hazard}"))
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
            reader = self._reader_of(stmt)
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

    def _on_server(self, t: bytes, body: bytes, raw: bytes, out: list[Action]) -> None:
        fields = m.error_fields(body, self.text.codec.read) if t == b"E" else {}
        if t == b"E":
            self.settings.failed()  # the transaction, implicit or explicit, is aborted
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
        if kind == b"D" and head.hidden and t in b"Tn":
            if t == b"T" and head.shape is not None:
                head.shape.describe(body)
            self.queue.popleft()  # the proxy's own Describe: the client never asked
            return
        if t == b"T" and self.watching is not None:
            self._seen_description(head, body)
        elif t == b"H" and self.watching is not None:
            self._seen_copy(head, body)
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
            self._status(body)
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
        effect = head.effect
        if head.kind == b"Q" and head.plan is not None:
            effect = head.plan.admission.effects.get(s.index)
        if tag and effect is not None and effect.op != "run":
            self.names.confirm(effect, self.statements, self.portals)
        if head.kind == b"F":
            # A fast-path call runs a function by OID (set_config too) out of the engine's sight.
            self.settings.completed("", Change("unknown", "*"))
            self._follow_settings()
        elif tag:
            change = statement_change(s)
            self.settings.completed(tag.rstrip(b"\0").decode("ascii", "replace"), change)
            self._follow_settings()

    def _ready(self, body: bytes, out: list[Action]) -> None:
        self._status(body)
        head = self.queue[0]
        for s in head.stmts:  # statements of a query string that never ran
            s.error = s.error or "not executed: an earlier statement in the string failed"
            out.append(Finish(s))
        head.stmts.clear()

    def _status(self, body: bytes) -> None:
        self.status = body[:1] or b"I"
        self.settings.ready(self.status)
        self._follow_settings()
        if self.status == b"I":
            self.names.transaction_ended()

    def _follow_settings(self) -> None:
        """Name resolution follows the search_path the server now has (proxy/gucs.py)."""
        path = self.settings.value("search_path")
        facts = self.facts
        if path is None and facts.search_path_known:
            self.facts = replace(facts, search_path_known=False)
        elif path is not None and (path != facts.search_path or not facts.search_path_known):
            self.facts = replace(facts, search_path=path, search_path_known=True)
        purpose = self.settings.value(PURPOSE)
        known = purpose is not None
        text = purpose[0] if purpose else ""
        if (text, known) != (self.facts.purpose, self.facts.purpose_known):
            self.facts = replace(self.facts, purpose=text, purpose_known=known)

    def deciding_facts(self) -> SessionFacts:
        """The facts a statement arriving now is decided on.

        A statement sent while a SET (or COMMIT, ROLLBACK...) is still in flight
        runs after it: its purpose is not yet known, so require_purpose refuses.
        """
        for e in self.queue:
            for s in e.stmts:
                info = statement_info(s)
                c = statement_change(s)
                moving = c is not None and (c.name in (PURPOSE, "*") or c.op not in _STILL)
                if moving or info.get("kind") in ("commit", "rollback"):
                    return replace(self.facts, purpose_known=False)
        return self.facts

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
        if s.portal is not None:
            # A cursor or portal survives its cut-off when the cancel lands after the
            # server finished: its later runs continue this count, so the cap holds.
            lim.used_rows += s.rows
            lim.used_bytes += s.bytes
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
        if changes_ahead(self.queue):
            # Their completions are about to be dropped: if the cancel came too
            # late, a SET later in the batch ran without the session seeing it.
            self.settings.unseen()
            self._follow_settings()
        self._skip_to_sync(out)
        # Whether the cancel hit (57014) or came too late, nothing more of this
        # batch reaches the client: it has its error and waits for ReadyForQuery.
        self._drain = True

    def _drop_statement_end(self, head: Entry, t: bytes, body: bytes, out: list[Action]) -> None:
        if t in b"CIE" and len(t) == 1 and head.stmts:
            s = head.stmts.popleft()
            if t == b"C":  # the cancel came too late: what ran still counts (a SET too)
                change = statement_change(s)
                self.settings.completed(body.rstrip(b"\0").decode("ascii", "replace"), change)
                self._follow_settings()
            out.append(Finish(s))

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


# Changes that leave every setting's value alone.
_STILL = frozenset({"set", "local", "savepoint", "release"})


def changes_ahead(queue: deque[Entry]) -> bool:
    """Does a statement queued before the next Sync change tracked settings or savepoints?"""
    for e in queue:
        if e.kind == b"S":
            return False
        if any(statement_change(s) is not None for s in e.stmts):
            return True
    return False
