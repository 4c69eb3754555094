"""The decision cache by statement shape: one parse per shape, not one per literal.

Sits behind the engine's exact-text cache (engine.py). A text that missed it is
cut into its shape and slot values (shape.py) and goes through three stages,
per (shape, identity facts):

1. first sight: decided as usual, and the shape remembered;
2. second sight, with other values: `free_slots` tells which slots the
   decision ignores; their values join the *bound* ones (those it may depend
   on) as the template's key. The text is decided as usual, and once more with
   every free slot holding an unguessable sentinel: that second decision,
   with the sentinels located in its output, is the template. The template is
   kept only if putting this text's values back into it gives exactly the
   decision the engine took for the text (every field, the error included);
   otherwise the shape goes back to exact-text caching for good;
3. any later text of that shape with the same bound values: the template,
   with its slot values put back as written, byte for byte, and each
   statement's `literals` (what the extraction detectors read) taken from this
   text, not the template's.

The first two stages cost what a miss costs today (the second one twice
over), so one-off statements pay nothing extra; a shape seen again with new
values is parsed no more. Both tables are LRUs bounded like the exact-text
cache; a cached hit is never copied into the exact-text cache, so a million
distinct values do not evict the statements that repeat.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from proxy.errors import ProxyError
from proxy.policy.shape import Sentinels, Shape, free_slots, shape_of
from proxy.policy.split import Piece, SplitError, split

log = logging.getLogger("oversight.policy")


class _Info(Protocol):
    """What the cache reads of engine.StatementInfo (engine.py imports this module)."""

    @property
    def rewritten(self) -> str | None: ...


class _Decision(Protocol):
    """What the cache reads of engine.Decision; both are frozen dataclasses."""

    @property
    def sql(self) -> str: ...
    @property
    def error(self) -> ProxyError | None: ...
    @property
    def statements(self) -> tuple[_Info, ...]: ...


Decision = TypeVar("Decision", bound=_Decision)
T = TypeVar("T")
Parts = tuple[str | int, ...]  # text, with an int where slot i's value goes
K = TypeVar("K")
V = TypeVar("V")
MAX_TEXT = 256 * 1024  # longer texts are rare and costly to cut up: exact-text cache only


@dataclass(slots=True)
class _State:
    """What is known about one shape under one set of identity facts."""

    free: frozenset[int] | None = None  # None until the second sight
    bound: tuple[int, ...] = ()  # the other slots, whose values key the templates
    exact: bool = False  # no template fits: exact-text caching only


@dataclass(frozen=True, slots=True)
class Template(Generic[Decision]):
    decision: Decision  # decided with sentinels in the free slots
    sql: Parts
    rewritten: tuple[Parts | None, ...]  # per statement

    def fill(self, shape: Shape) -> Decision:
        values = shape.sources
        infos = tuple(
            _with(
                info,
                literals=shape.literals[k],
                rewritten=None if parts is None else _join(parts, values),
            )
            for k, (info, parts) in enumerate(
                zip(self.decision.statements, self.rewritten, strict=True)
            )
        )
        return _with(self.decision, sql=_join(self.sql, values), statements=infos)


def _with(obj: T, **changes: object) -> T:
    """dataclasses.replace without its per-call checks (a third of a cache hit's time).
    Every field is copied, so fields added to Decision or StatementInfo carry over."""
    names = _FIELDS.get(type(obj))
    if names is None:
        names = _FIELDS[type(obj)] = tuple(f.name for f in dataclasses.fields(obj))  # type: ignore[arg-type]
    args = {n: getattr(obj, n) for n in names}
    args.update(changes)
    return type(obj)(**args)


_FIELDS: dict[type, tuple[str, ...]] = {}


class NormCache(Generic[Decision]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._shapes: OrderedDict[tuple[object, ...], _State] = OrderedDict()
        # (shape key, bound values) -> template, or None after one sight
        self._templates: OrderedDict[tuple[object, ...], Template[Decision] | None]
        self._templates = OrderedDict()
        self._sentinels = Sentinels(
            "o" + secrets.token_hex(8), str(secrets.randbelow(9 * 10**17) + 10**17)
        )
        self.hits = 0
        self.probes = 0

    def decide(
        self,
        sql: str,
        scope: tuple[object, ...],
        run: Callable[[str, list[Piece] | None], tuple[Decision, bool]],
    ) -> tuple[Decision, bool]:
        """The decision for `sql` under `scope` (the facts part of the engine's cache key),
        and whether the engine may keep it in its exact-text cache."""
        if len(sql) > MAX_TEXT:
            return run(sql, None)
        try:
            pieces = split(sql)
        except SplitError:
            return run(sql, None)  # the engine says why
        shape = shape_of(sql, pieces)
        if shape is None or not shape.sources:
            return run(sql, pieces)
        skey = (shape.key, *scope)
        state = self._shapes.get(skey)
        if state is None:
            _put(self._shapes, skey, _State(), self.size)
            return run(sql, pieces)
        self._shapes.move_to_end(skey)
        if state.exact:
            return run(sql, pieces)
        if state.free is None:
            free = free_slots(shape, self._sentinels)
            state.free = free
            state.bound = tuple(i for i in range(len(shape.sources)) if i not in free)
            if not free:
                state.exact = True
                return run(sql, pieces)
            tkey = (skey, tuple(shape.sources[i] for i in state.bound))
            return self._probe(sql, pieces, shape, state, tkey, run)
        tkey = (skey, tuple(shape.sources[i] for i in state.bound))
        template = self._templates.get(tkey, _NEVER)
        if isinstance(template, Template):
            self._templates.move_to_end(tkey)
            self.hits += 1
            return template.fill(shape), False
        if template is _NEVER:
            _put(self._templates, tkey, None, self.size)
            return run(sql, pieces)
        return self._probe(sql, pieces, shape, state, tkey, run)

    def _probe(
        self,
        sql: str,
        pieces: list[Piece],
        shape: Shape,
        state: _State,
        tkey: tuple[object, ...],
        run: Callable[[str, list[Piece] | None], tuple[Decision, bool]],
    ) -> tuple[Decision, bool]:
        self.probes += 1
        decision, ok = run(sql, pieces)
        if not ok:
            return decision, ok
        free = state.free or frozenset()
        s = self._sentinels
        probe_text = shape.text(lambda i: s.source(shape, i) if i in free else shape.sources[i])
        sample, sample_ok = run(probe_text, None)
        template = self._template(sample, shape, free) if sample_ok else None
        if template is None or not same(template.fill(shape), decision):
            state.exact = True
            log.debug("shape cache: a shape's decision does not fit a template; exact text only")
        else:
            _put(self._templates, tkey, template, self.size)
        return decision, ok

    def _template(
        self, d: Decision, shape: Shape, free: frozenset[int]
    ) -> Template[Decision] | None:
        """The sample decision with each free sentinel located, or None when a sentinel
        shows anywhere but as itself (printed differently, or in a reason)."""
        if d.statements and len(d.statements) != len(shape.literals):
            return None
        s = self._sentinels
        by_text = {s.source(shape, i): i for i in free}
        alts = []
        for text in sorted(by_text, key=len, reverse=True):
            alts.append(rf"(?<![0-9]){text}(?![0-9])" if text[0].isdigit() else re.escape(text))
        pattern = re.compile("|".join(alts))

        def parts(text: str) -> Parts | None:
            out: list[str | int] = []
            pos = 0
            for m in pattern.finditer(text):
                out.append(text[pos : m.start()])
                out.append(by_text[m.group()])
                pos = m.end()
            out.append(text[pos:])
            rest = "".join(p for p in out if isinstance(p, str))
            return None if s.letters in rest or s.digits in rest else tuple(out)

        sql = parts(d.sql)
        rewritten = tuple(None if i.rewritten is None else parts(i.rewritten) for i in d.statements)
        if sql is None or any(
            r is None and i.rewritten is not None
            for r, i in zip(rewritten, d.statements, strict=True)
        ):
            return None
        return Template(d, sql, rewritten)


def same(a: Decision, b: Decision) -> bool:
    """Equal in every field; errors compare by class and content, not identity."""
    if _error(a.error) != _error(b.error):
        return False
    return _with(a, error=None) == _with(b, error=None)


def _error(e: ProxyError | None) -> object:
    return None if e is None else (type(e), e.args, sorted(vars(e).items()))


def _join(parts: Parts, values: tuple[str, ...]) -> str:
    return "".join(p if isinstance(p, str) else values[p] for p in parts)


_NEVER = object()


def _put(table: OrderedDict[K, V], key: K, value: V, size: int) -> None:
    table[key] = value
    if len(table) > size:
        table.popitem(last=False)
