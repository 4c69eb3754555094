"""The session's part of the subject ledger: which statements' rows to read, and reading them.

A RowDescription says where each result column comes from. For a simple
Query it arrives right before the statement's rows: the session asks its
database's `Watch` (proxy/watching.py) which columns carry a subject's key
and gives the statement a `RowReader` (proxy/ledger/rows.py) if any do. In
the extended protocol it answers a Describe, of a prepared statement or of
a portal, and the rows come later, in answer to Execute, possibly in a
later batch and many times (a statement prepared once and run with Bind and
Execute alone): so the description is kept with the statement (`Plan.shape`)
or the portal, a Bind's result formats are applied to it, and an Execute's
run is given its reader when its rows start.

A statement without watched columns gets no reader; the relay's row loop
then does nothing more for it than before. Nothing here runs at all when
no subjects are configured for the session's database.
"""

from __future__ import annotations

from collections import deque

from proxy.actions import Action, Plan, Running, ToServer
from proxy.identity import SessionFacts
from proxy.ledger.copyout import CopyReader
from proxy.ledger.rows import RowReader, bind_result_formats, described
from proxy.ledger.watch import Shape, Watch
from proxy.replies import Entry, next_stmt, statement_info
from proxy.transcode import TextCodec
from proxy.watching import Watching
from proxy.wire import frame

Reader = RowReader | CopyReader
MAX_PORTALS = 256  # portal descriptions kept per session (clients reuse a few names)


class SeenSide:
    """Ledger methods of `Session`; the attributes are the session's."""

    facts: SessionFacts
    text: TextCodec
    queue: deque[Entry]
    watching: Watching | None
    portal_shapes: dict[str, Shape]

    def _watch(self) -> Watch | None:
        w = self.watching
        return w.get(self.facts.database) if w is not None else None

    def _seen_bind(self, portal: str, plan: Plan, body: bytes) -> None:
        """A Bind went upstream: the portal returns its statement's rows, in the formats asked."""
        shapes = self.portal_shapes
        shapes.pop(portal, None)
        if self.watching is None:
            return
        if plan.shape is None:
            plan.shape = Shape()
        shapes[portal] = Shape(statement=plan.shape, formats=bind_result_formats(body))
        if len(shapes) > MAX_PORTALS:
            del shapes[next(iter(shapes))]

    def _seen_describe(self, kind: bytes, name: str, plan: Plan | None) -> Shape | None:
        """A Describe went upstream: where to keep the RowDescription that answers it.

        Kept even while nothing is watched, so that a reload adding subjects
        applies to statements prepared before it.
        """
        if self.watching is None:
            return None
        if kind == b"S":
            if plan is not None and plan.shape is None:
                plan.shape = Shape()
            shape = plan.shape if plan is not None else None
        else:
            shape = self.portal_shapes.get(name)
            if shape is None:
                shape = self.portal_shapes[name] = Shape()
        if shape is not None:
            shape.asked = True
        return shape

    def _seen_undescribed(self, portal: str, out: list[Action]) -> None:
        """An Execute of a portal described nowhere: ask the upstream for its description first.

        A client need not Describe what it runs (it may know the columns); the
        proxy then sends a Describe of its own, whose answer the client never
        sees, so that no run escapes the ledger by skipping it.
        """
        if self.watching is None or self._watch() is None:
            return
        shape = self.portal_shapes.get(portal)
        if shape is not None and shape.known:
            return
        if shape is None:
            shape = self.portal_shapes[portal] = Shape()
        shape.asked = True
        out.append(ToServer(frame(b"D", b"P" + portal.encode() + b"\0")))
        self.queue.append(Entry(b"D", shape=shape, hidden=True))

    def _seen_execute(self, stmt: Running, portal: str) -> None:
        """An Execute went upstream: its rows are read as its portal was described."""
        if self.watching is not None:
            stmt.shape = self.portal_shapes.get(portal)

    def _seen_description(self, head: Entry, body: bytes) -> None:
        """A RowDescription arrived: keep it for its Describe, or read the statement's rows."""
        if head.kind == b"D":
            if head.shape is not None:
                head.shape.describe(body)
            return
        if head.kind != b"Q":
            return
        w = self._watch()
        if w is None:
            return
        stmt = head.stmts[0] if head.stmts else next_stmt(head)
        stmt.reader = w.reader(described(body, w.columns), self.text.codec.read, stmt)

    def _seen_copy(self, head: Entry, body: bytes) -> None:
        """A CopyOutResponse arrived: read the COPY's rows if it copies a watched table."""
        w = self._watch()
        if w is None or not w.tables or head.kind not in b"QE":
            return
        stmt = head.stmts[0] if head.stmts else next_stmt(head) if head.kind == b"Q" else None
        if stmt is None or statement_info(stmt).get("kind") != "copy":
            return
        adm = stmt.plan.admission
        if len(adm.statements) > 1:
            return  # one COPY of a multi-statement string: its own text is not at hand
        sql = adm.sql if adm.sql is not None else stmt.plan.sql
        facts = self.facts
        path = [facts.user if s == "$user" else s for s in facts.search_path]
        binary = body[:1] == b"\x01"
        stmt.reader = w.copy_reader(sql, binary, path, self.text.codec.read, stmt)

    def _reader_of(self, stmt: Running | None) -> Reader | None:
        """The reader of `stmt`'s rows; a portal's run gets its own when its rows start."""
        if stmt is None:
            return None
        shape = stmt.shape
        if shape is not None:
            stmt.shape = None
            w = self._watch()
            if w is not None:
                stmt.reader = w.reader(shape.columns(w), self.text.codec.read, stmt)
        return stmt.reader
