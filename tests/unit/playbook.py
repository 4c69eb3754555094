"""A Playbook for the sans-IO session (after mitmproxy's): bytes in, a readable trace out.

Tests feed client and server bytes built with the small helpers below and
compare what the session asks for against a short list of lines such as

    "client T D*3"              messages sent to the client (runs collapsed)
    "finish 'select 1' rows=3 SELECT 3"   a statement audited, with its tag
    "finish 'x' rows=0 error=42501"       ... or its SQLSTATE
    "server P B D E S"          messages sent upstream
    "decide 'select 1'"         the hooks were asked (the playbook answers)
    "cancel"                    an upstream cancel was requested

Adjacent ToClient (and ToServer) actions are merged before rendering, so a
trace says what went over the wire, not how the session chunked it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from proxy import messages as m
from proxy.actions import (
    Action,
    CancelUpstream,
    Close,
    Decide,
    Finish,
    Running,
    Throttle,
    ToClient,
    ToServer,
)
from proxy.hooks import Admission
from proxy.identity import SessionFacts
from proxy.session import Session
from proxy.wire import FrameReader, frame

I16, I32 = struct.Struct("!h"), struct.Struct("!i")
cstr = m.cstr

# ---------------------------------------------------------------- server messages


def row_description(*names: str) -> bytes:
    cols = b"".join(cstr(n) + struct.pack("!ihihih", 0, 0, 25, -1, -1, 0) for n in names)
    return frame(b"T", I16.pack(len(names)) + cols)


def data_row(*values: str | None) -> bytes:
    body = I16.pack(len(values))
    for v in values:
        if v is None:
            body += I32.pack(-1)
        else:
            b = v.encode()
            body += I32.pack(len(b)) + b
    return frame(b"D", body)


def rows(*values: str) -> bytes:
    """One single-column DataRow per value."""
    return b"".join(data_row(v) for v in values)


def command_complete(tag: str) -> bytes:
    return m.command_complete(tag)


def ready_for_query(status: bytes = b"I") -> bytes:
    return m.ready_for_query(status)


def error(code: str, message: str = "boom") -> bytes:
    return m.error_response({"S": "ERROR", "V": "ERROR", "C": code, "M": message})


def notice(message: str) -> bytes:
    return m.error_response({"S": "NOTICE", "C": "00000", "M": message}, notice=True)


def parameter_status(name: str, value: str) -> bytes:
    return frame(b"S", cstr(name) + cstr(value))


def notification(pid: int, channel: str, payload: str) -> bytes:
    return frame(b"A", I32.pack(pid) + cstr(channel) + cstr(payload))


def parameter_description(*oids: int) -> bytes:
    return frame(b"t", I16.pack(len(oids)) + b"".join(struct.pack("!I", o) for o in oids))


PARSE_COMPLETE = frame(b"1")
BIND_COMPLETE = frame(b"2")
CLOSE_COMPLETE = frame(b"3")
NO_DATA = frame(b"n")
PORTAL_SUSPENDED = frame(b"s")
EMPTY_QUERY = frame(b"I")
COPY_DONE = frame(b"c")


def copy_response(kind: bytes, ncols: int = 1) -> bytes:
    """CopyInResponse (G) or CopyOutResponse (H), text format."""
    return frame(kind, b"\0" + I16.pack(ncols) + I16.pack(0) * ncols)


def copy_data(data: bytes) -> bytes:
    return frame(b"d", data)


def select(tag_rows: int, *, status: bytes = b"I", col: str = "x") -> bytes:
    """A whole simple-query reply: T, n DataRows, C and Z."""
    return (
        row_description(col)
        + rows(*(str(i) for i in range(tag_rows)))
        + command_complete(f"SELECT {tag_rows}")
        + ready_for_query(status)
    )


# ---------------------------------------------------------------- client messages

query = m.query
parse = m.parse


def bind(portal: str = "", statement: str = "", *params: str) -> bytes:
    body = cstr(portal) + cstr(statement) + I16.pack(0) + I16.pack(len(params))
    for p in params:
        body += I32.pack(len(p.encode())) + p.encode()
    return frame(b"B", body + I16.pack(0))


def describe(kind: bytes, name: str = "") -> bytes:
    return frame(b"D", kind + cstr(name))


def close(kind: bytes, name: str = "") -> bytes:
    return frame(b"C", kind + cstr(name))


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return frame(b"E", cstr(portal) + I32.pack(max_rows))


SYNC = frame(b"S")
FLUSH = frame(b"H")
TERMINATE = frame(b"X")
CLIENT_COPY_DONE = frame(b"c")


def copy_fail(message: str) -> bytes:
    return frame(b"f", cstr(message))


def extended(sql: str, name: str = "", portal: str = "", max_rows: int = 0) -> bytes:
    """P/B/D(P)/E for one statement, without Sync (pipelines add their own)."""
    return (
        parse(name, sql) + bind(portal, name) + describe(b"P", portal) + execute(portal, max_rows)
    )


# ---------------------------------------------------------------- rendering


def tokens(data: bytes, *, backend: bool = True) -> list[str]:
    """Message types of a byte stream; from the backend, E carries its SQLSTATE, Z its status."""
    out: list[str] = []
    reader = FrameReader()
    reader.feed(data)
    for f in reader:
        t = f.type.decode()
        if not backend:
            pass
        elif f.type == b"E":
            t += ":" + m.error_fields(f.body).get("C", "?")
        elif f.type == b"Z":
            t += ":" + f.body.decode()
        out.append(t)
    assert reader.pending() == 0, "trailing partial message"
    return out


def collapse(toks: list[str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(toks):
        j = i
        while j < len(toks) and toks[j] == toks[i]:
            j += 1
        out.append(toks[i] if j - i == 1 else f"{toks[i]}*{j - i}")
        i = j
    return " ".join(out)


def describe_stmt(s: Running) -> str:
    sql = s.plan.sql if s.index == 0 else f"{s.plan.sql}#{s.index}"
    what = "error=" + s.error.split(":")[0] if s.error else s.tag
    return f"finish {sql!r} rows={s.rows}" + (" cutoff" if s.cutoff else "") + f" {what}".rstrip()


def render(actions: Iterable[Action]) -> list[str]:
    out: list[str] = []
    pending: tuple[str, bytearray] | None = None

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            who, data = pending
            toks = tokens(bytes(data), backend=who == "client")
            out.append(f"{who} {collapse(toks)}")
            pending = None

    for a in actions:
        if isinstance(a, ToClient | ToServer):
            who = "client" if isinstance(a, ToClient) else "server"
            if pending is not None and pending[0] == who:
                pending[1].extend(a.data)
            else:
                flush()
                pending = (who, bytearray(a.data))
            continue
        flush()
        if isinstance(a, Decide):
            out.append(f"decide {a.sql!r}")
        elif isinstance(a, Finish):
            out.append(describe_stmt(a.stmt))
        elif isinstance(a, CancelUpstream):
            out.append("cancel")
        elif isinstance(a, Throttle):
            out.append(f"throttle {a.seconds}")
        elif isinstance(a, Close):
            out.append("close" + (f" {a.error.sqlstate}" if a.error else ""))
    flush()
    return out


# ---------------------------------------------------------------- the playbook

Policy = Callable[[str, bool], Admission]
Runs = Callable[[Decide], Admission]


def allow_all(sql: str, extended: bool) -> Admission:
    return Admission()


class Playbook:
    """Drives one Session; Decide actions are answered by `policy` unless `auto=False`.

    `runs`, when given, answers the Decides of runs (those carrying a token,
    which the I/O layer puts to `Hooks.execute`); otherwise `policy` does.
    """

    def __init__(
        self, policy: Policy = allow_all, *, status: bytes = b"I", runs: Runs | None = None
    ) -> None:
        self.session = Session(SessionFacts(user="alice", database="db"))
        self.session.status = status
        self.policy = policy
        self.runs = runs
        self.actions: list[Action] = []  # everything, for byte-level checks

    def _resolve(self, actions: list[Action], auto: bool) -> list[Action]:
        out: list[Action] = []
        todo = list(actions)
        while todo:
            a = todo.pop(0)
            out.append(a)
            if isinstance(a, Decide) and auto:
                run = self.runs is not None and a.token is not None
                adm = self.runs(a) if self.runs and run else self.policy(a.sql, a.extended)
                todo = self.session.decided(adm) + todo
        self.actions += out
        return out

    def client(self, data: bytes, *, auto: bool = True) -> list[str]:
        return render(self._resolve(self.session.client_data(data), auto))

    def decided(self, adm: Admission) -> list[str]:
        return render(self._resolve(self.session.decided(adm), True))

    def server(self, data: bytes) -> list[str]:
        return render(self._resolve(self.session.server_data(data), True))

    def cancel_done(self) -> list[str]:
        return render(self._resolve(self.session.cancel_done(), True))

    def raw(self, data: bytes, *, to: type[ToClient] | type[ToServer] = ToClient) -> bytes:
        """Feed server (`to=ToClient`) or client bytes; return the bytes forwarded."""
        acts = self.session.server_data(data) if to is ToClient else self.session.client_data(data)
        acts = self._resolve(acts, True)
        return b"".join(a.data for a in acts if isinstance(a, to))

    def replies(self, data: bytes) -> bytes:
        """Feed client bytes; return what the session itself answered the client."""
        acts = self._resolve(self.session.client_data(data), True)
        return b"".join(a.data for a in acts if isinstance(a, ToClient))


def finishes(actions: Iterable[Action]) -> list[Running]:
    return [a.stmt for a in actions if isinstance(a, Finish)]
