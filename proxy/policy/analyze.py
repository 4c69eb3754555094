"""What one parsed statement reads, writes and calls.

Three passes over a sqlglot tree:

1. `collect`: every relation reference (`exp.Table`) that is not a CTE reference,
   with PostgreSQL's CTE scoping (a CTE is visible to the main query and to
   later CTEs of the same WITH; to all of them under RECURSIVE; never to itself
   otherwise), whether it is written, and every function call.
2. The engine resolves each reference to `schema.table` (search_path, catalog).
3. `attribute_columns`: every column each reference gives up, including `*`,
   `t.*`, whole-row references (`SELECT p FROM people p`, `row_to_json(p)`,
   `(p).ssn`), USING/NATURAL joins and column aliases `people AS p(a, b)`;
   `attribute_copy`: the columns `COPY t [(cols)] TO` reads.
   Unqualified names resolve innermost scope first; when unsure it marks more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from proxy.catalog import Relation
from proxy.policy.callnames import Written, extra_calls, written

_SCOPES = (exp.Select, exp.Update, exp.Delete, exp.Merge, exp.Insert, exp.Copy)
_SCOPE_TYPES = frozenset(_SCOPES)
_DML = frozenset({exp.Insert, exp.Update, exp.Delete, exp.Merge})


def fold(ident: exp.Expr | str | None) -> str:
    """PostgreSQL identifier folding: unquoted to lower case, quoted exact, 63 bytes at most."""
    if ident is None:
        return ""
    if isinstance(ident, str):
        name = ident.lower()
    elif isinstance(ident, exp.Identifier):
        name = str(ident.this) if ident.quoted else str(ident.this).lower()
    else:
        name = ident.name.lower()
    if len(name) > 63 // 4 and len(name.encode()) > 63:
        # PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes (with a NOTICE).
        name = name.encode()[:63].decode("utf-8", "ignore")
    return name


@dataclass(slots=True, eq=False)
class Occ:
    """One reference to a relation in the statement."""

    node: exp.Table
    schema: str  # as written, folded; "" when unqualified
    name: str
    alias: str  # how the query refers to it
    scope: exp.Expr | None
    write: bool
    qualified: str = ""
    relation: Relation | None = None
    colmap: dict[str, str] = field(default_factory=dict)  # alias column -> real column
    columns: set[str] = field(default_factory=set)
    whole: bool = False

    def column_names(self) -> tuple[str, ...]:
        return self.relation.columns if self.relation else ()


@dataclass(frozen=True, slots=True)
class Call:
    schema: str  # "" when unqualified
    names: tuple[str, ...]  # the name as written, folded (one)
    args: tuple[str | None, ...]  # literal text of each argument, None when not a literal
    in_from: bool
    # Checked strictly by its name: always, now that calls are read as written.
    anonymous: bool = True


Scopes = tuple[exp.Expr, ...]  # enclosing Select/DML nodes, outermost first


@dataclass(slots=True)
class Nodes:
    """The node kinds the passes need, gathered in one depth-first walk.

    The walk carries what would otherwise take a climb to the root per node (and so
    quadratic time on a 10,000-term OR chain): the chain of enclosing scopes, the CTE
    names visible at that point, and whether we are inside FOR UPDATE OF.
    """

    tables: list[tuple[exp.Table, Scopes, bool]] = field(default_factory=list)  # (t, scopes, cte)
    columns: list[tuple[exp.Column, Scopes]] = field(default_factory=list)
    stars: list[tuple[exp.Star, Scopes]] = field(default_factory=list)
    joins: list[tuple[exp.Join, Scopes]] = field(default_factory=list)
    funcs: list[exp.Func] = field(default_factory=list)
    intos: list[exp.Into] = field(default_factory=list)
    dmls: list[exp.Expr] = field(default_factory=list)
    extra: list[Written] = field(default_factory=list)  # callnames.extra_calls of each root

    @classmethod
    def of(cls, tree: exp.Expr) -> Nodes:
        n = cls()
        empty: frozenset[str] = frozenset()
        stack: list[tuple[exp.Expr, Scopes, frozenset[str], bool]] = [(tree, (), empty, False)]
        while stack:
            node, scopes, ctes, in_lock = stack.pop()
            kind = type(node)
            extra = extra_calls(node)
            if extra:
                n.extra.extend(extra)
            if kind is exp.Column or kind is exp.Pseudocolumn:
                if not in_lock:
                    n.columns.append((node, scopes))  # type: ignore[arg-type]
            elif kind is exp.Table:
                if not in_lock:
                    n.tables.append((node, scopes, _names_cte(node, ctes)))  # type: ignore[arg-type]
            elif kind is exp.Star:
                n.stars.append((node, scopes))  # type: ignore[arg-type]
            elif kind is exp.Join:
                n.joins.append((node, scopes))  # type: ignore[arg-type]
            elif kind is exp.Into:
                n.intos.append(node)  # type: ignore[arg-type]
            elif kind is exp.Lock:
                in_lock = True
            elif isinstance(node, exp.Func):
                n.funcs.append(node)
            elif kind in _DML:
                n.dmls.append(node)
            inner = (*scopes, node) if kind in _SCOPE_TYPES else scopes
            w = node.args.get("with_")
            children = list(node.iter_expressions())
            if isinstance(w, exp.With):
                names = [_cte_name(c) for c in w.expressions]
                body_ctes = ctes | frozenset(names)
                recursive = bool(w.args.get("recursive"))
                for child in reversed(children):
                    if child is not w:
                        stack.append((child, inner, body_ctes, in_lock))
                for i in range(len(names) - 1, -1, -1):
                    # A CTE sees the earlier ones of its WITH (all of them under RECURSIVE).
                    seen = body_ctes if recursive else ctes | frozenset(names[:i])
                    stack.append((w.expressions[i], inner, seen, in_lock))
            else:
                for child in reversed(children):  # popped in source order
                    stack.append((child, inner, ctes, in_lock))
        return n


def _cte_name(cte: exp.Expr) -> str:
    alias = cte.args.get("alias")
    return fold(alias.this) if alias is not None and alias.this is not None else ""


def _names_cte(t: exp.Table, visible: frozenset[str]) -> bool:
    if t.args.get("db") is not None or t.args.get("catalog") is not None:
        return False
    return fold(t.this) in visible


@dataclass(slots=True)
class Collected:
    occs: list[Occ]
    calls: list[Call]
    nodes: Nodes


def _write_targets(tree: exp.Expr, nodes: Nodes) -> set[int]:
    out: set[int] = set()

    def add(x: exp.Expr | None) -> None:
        if isinstance(x, exp.Schema):
            x = x.this
        if isinstance(x, exp.Table):
            out.add(id(x))

    if isinstance(tree, exp.Insert | exp.Update | exp.Delete | exp.Merge):
        add(tree.this)
    if isinstance(tree, exp.Copy) and tree.args.get("kind"):
        add(tree.this)
    if isinstance(tree, exp.TruncateTable):
        for t in tree.expressions:
            add(t)
    if isinstance(tree, exp.Create | exp.Drop | exp.Alter):
        # Every table a DDL statement names outside its AS query is one it changes
        # (CREATE INDEX ON t, CREATE TRIGGER ... ON t, ALTER TABLE t, DROP TABLE t).
        query = tree.args.get("expression")
        reads = {id(x) for x in query.walk()} if isinstance(query, exp.Expr) else set()
        for t, _, _ in nodes.tables:
            if id(t) not in reads:
                out.add(id(t))
    for into in nodes.intos:
        add(into.this)
    # Data-modifying CTEs: WITH x AS (DELETE FROM people ...) SELECT ...
    for dml in nodes.dmls:
        if dml is not tree:
            add(dml.this)
    return out


def _args(node: exp.Func) -> tuple[str | None, ...]:
    vals = [node.this] if node.args.get("this") is not None else []
    rest = node.args.get("expressions")  # a list, or one node in some sqlglot classes
    vals += rest if isinstance(rest, list) else [rest]
    return tuple(_literal(v) for v in vals if isinstance(v, exp.Expr))


def _literal(v: exp.Expr) -> str | None:
    if isinstance(v, exp.Literal):
        return str(v.this)
    if isinstance(v, exp.Boolean):  # set_config's is_local: true / false
        return "true" if v.this else "false"
    return None


def _call(node: exp.Func) -> Call | None:
    """The call by the name the user wrote (callnames.mark), or None: a node sqlglot
    made from syntax (CAST, COALESCE, operators, ARRAY[...]) or built itself."""
    found = written(node)
    if found is None:
        return None
    parent = node.parent
    in_from = isinstance(parent, exp.Table) and parent.this is node
    return Call(found[0], (found[1],), _args(node), in_from, True)


def collect(tree: exp.Expr) -> Collected:
    nodes = Nodes.of(tree)
    writes = _write_targets(tree, nodes)
    occs: list[Occ] = []
    for t, scopes, is_cte in nodes.tables:
        if not isinstance(t.this, exp.Identifier):
            continue  # table function, ROWS FROM (...): seen as calls below
        if is_cte:
            continue  # (FOR UPDATE OF x names a FROM item and is skipped by the walk)
        alias_node = t.args.get("alias")
        parent = t.parent
        if alias_node is None and isinstance(parent, exp.Subquery | exp.Paren):
            alias_node = parent.args.get("alias")  # FROM (cases) x
        alias = fold(alias_node.this) if alias_node is not None and alias_node.this else ""
        o = Occ(
            node=t,
            schema=fold(t.args.get("db")),
            name=fold(t.this),
            alias=alias or fold(t.this),
            scope=scopes[-1] if scopes else None,
            write=id(t) in writes,
        )
        if alias_node is not None and alias_node.columns:
            o.colmap = {fold(c): "" for c in alias_node.columns}
        occs.append(o)
    calls = [c for f in nodes.funcs if (c := _call(f)) is not None]
    # Calls no node stands for (`string_agg(...)`, `FROM anti(1)`): on the parsed roots.
    calls += [Call(s, (n,), (), False, True) for s, n in nodes.extra]
    return Collected(occs, calls, nodes)


def bind_colmaps(occs: list[Occ]) -> None:
    """After resolution: map `people AS p(a, b)` alias columns to the real ones by position."""
    for o in occs:
        if not o.colmap:
            continue
        real = o.column_names()
        aliases = list(o.colmap)
        if not real:
            o.whole = True  # unknown columns under aliases: assume anything is read
            o.colmap = {}
            continue
        renamed = {a: real[i] for i, a in enumerate(aliases) if i < len(real)}
        # Columns past the alias list keep their names; renamed ones are hidden.
        for c in real[len(aliases) :]:
            renamed.setdefault(c, c)
        o.colmap = renamed


def _visible(o: Occ, col: str) -> bool | None:
    if o.relation is None or not o.relation.columns:
        return None
    if o.colmap:
        return col in o.colmap
    return col in o.relation.columns


def attribute_columns(nodes: Nodes, occs: list[Occ]) -> None:
    by_scope: dict[int, list[Occ]] = {}
    for o in occs:
        by_scope.setdefault(id(o.scope), []).append(o)

    def in_scopes(chain: Scopes) -> list[list[Occ]]:
        return [by_scope.get(id(s), []) for s in reversed(chain)]  # innermost first

    def read(o: Occ, col: str) -> None:
        o.columns.add(o.colmap.get(col, col) if o.colmap else col)

    for col, chain in nodes.columns:
        if _is_set_target(col):
            continue
        scopes = in_scopes(chain)
        table = fold(col.args.get("table"))
        if table:
            db = fold(col.args.get("db"))
            for group in scopes:
                hits = [o for o in group if o.alias == table and (not db or o.schema in ("", db))]
                for o in hits:
                    if isinstance(col.this, exp.Star):
                        o.whole = True
                    else:
                        read(o, fold(col.this))
                if hits:
                    break
            continue
        name = fold(col.this)
        resolved = False
        for group in scopes:
            hits = [o for o in group if _visible(o, name)]
            unsure = [o for o in group if _visible(o, name) is None]
            for o in hits + unsure:
                read(o, name)
            if hits:
                resolved = True
                break
        if resolved:
            continue
        for group in scopes:  # not a column anywhere: a whole-row reference?
            hits = [o for o in group if o.alias == name]
            for o in hits:
                field_name = _field_access(col)
                if field_name is not None and o.relation is not None:
                    read(o, field_name)
                else:
                    o.whole = True
            if hits:
                break

    for star, chain in nodes.stars:
        parent = star.parent
        if isinstance(parent, exp.Select | exp.Returning) and star in parent.expressions:
            scope = parent if isinstance(parent, exp.Select) else (chain[-1] if chain else None)
            for o in by_scope.get(id(scope), []):
                if not o.write or isinstance(parent, exp.Returning):
                    o.whole = True

    for join, chain in nodes.joins:
        scope_occs = by_scope.get(id(chain[-1] if chain else None), [])
        if str(join.args.get("method") or "").upper() == "NATURAL":
            for o in scope_occs:
                o.whole = True
        for ident in join.args.get("using") or []:
            name = fold(ident)
            for o in scope_occs:
                if _visible(o, name) is not False:
                    read(o, name)


def attribute_copy(tree: exp.Expr, occs: list[Occ]) -> None:
    """`COPY t (a, b) TO` reads the listed columns of t; `COPY t TO`, all of them.

    sqlglot holds the column list as bare identifiers, which the column pass does
    not see; COPY FROM writes its list, like INSERT's.
    """
    if not isinstance(tree, exp.Copy) or tree.args.get("kind"):
        return
    listed = tree.this.expressions if isinstance(tree.this, exp.Schema) else []
    table = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
    for o in occs:
        if o.node is not table:
            continue
        if listed:
            o.columns.update(fold(c) for c in listed)
        elif o.column_names():
            o.columns.update(o.column_names())  # so a refusal names the denied column
        else:
            o.whole = True  # columns unknown: assume every one is read


def _is_set_target(col: exp.Column) -> bool:
    """`UPDATE t SET col = ...`: the left-hand column is written, not read."""
    parent = col.parent
    return (
        isinstance(parent, exp.EQ)
        and parent.this is col
        and isinstance(parent.parent, exp.Update)
        and parent in parent.parent.expressions
    )


def _field_access(col: exp.Column) -> str | None:
    """`(p).ssn` reads one field of the whole-row value p."""
    paren = col.parent
    if isinstance(paren, exp.Paren) and isinstance(paren.parent, exp.Dot):
        dot = paren.parent
        if dot.this is paren and isinstance(dot.expression, exp.Identifier):
            return fold(dot.expression)
    return None
