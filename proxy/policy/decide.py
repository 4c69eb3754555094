"""The decision for one statement: kind gate, reads, writes, functions, rewrite.

Order of business for a statement:
1. its kind from the leading tokens (kinds.py); EXPLAIN / DECLARE / PREPARE
   decide their inner statement as if it stood alone;
2. statements sqlglot models are parsed; EXECUTE / CALL arguments are decided
   as a SELECT of them; anything else that may touch tables is checked by name
   from its tokens; what is left is "unparsed" (which runs for a user no rule
   applies to when it names no governed relation);
3. every relation reference is resolved and checked against the identity's
   rules; every function call against the function rules and the dangerous list;
4. if nothing blocks, governed reads are replaced by masking subqueries
   (rewrite.py) and permitted writes are held to the row filter (writecheck.py).
The first blocking reason found wins, so the error names one rule.
"""

from __future__ import annotations

import dataclasses

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokenizer_core import TokenType

from proxy.errors import NotUnderstood
from proxy.gucs import Change, set_config_change
from proxy.policy import callnames, checks, pushdown, pushparams, views, writecheck
from proxy.policy.analyze import Call, Occ, attribute_columns, attribute_copy, bind_colmaps, collect
from proxy.policy.changes import statement_change
from proxy.policy.context import Context
from proxy.policy.copystmt import parse_copy
from proxy.policy.kinds import PARSED, Head, head, search_path_of
from proxy.policy.lookups import Lookup, find, literal_starts, touches
from proxy.policy.rewrite import (
    Masker,
    MissingAttribute,
    UnknownColumns,
    as_from_item,
)
from proxy.policy.split import Piece, SplitError, tokenize
from proxy.policy.utilexpr import BadArgs, arg_list, name_end
from proxy.policy.verdict import Verdict
from proxy.redact import redact

_KIND_OF = (
    (exp.Insert, "insert"),
    (exp.Update, "update"),
    (exp.Delete, "delete"),
    (exp.Merge, "merge"),
    (exp.Copy, "copy"),
    (exp.TruncateTable, "truncate"),
    (exp.Query, "select"),
    (exp.Create, "create"),
    (exp.Drop, "drop"),
    (exp.Alter, "alter"),
)
_PG = Postgres()
WRITES = frozenset({"insert", "update", "delete", "merge", "truncate", "copy"})


def decide(piece: Piece, ctx: Context, masker: Masker, *, extended: bool = False) -> Verdict:
    h = head(piece)
    v = Verdict(kind=h.kind, text=piece.text, sql=piece.text, ddl=h.ddl)
    # U&-decoded pieces are redacted from their decoded text (offsets refer to it).
    src = piece.text if piece.parse_text == piece.text else piece.parse_text
    v.redacted, v.fingerprint, v.literals = redact(src, piece.tokens, piece.base)
    if h.kind == "unknown":
        _unmodelled(v, piece, ctx, f"unrecognized statement {piece.tokens[0].text.upper()}")
        return v
    if h.inner is not None:
        return _with_inner(v, h, piece, ctx, masker, extended)
    if not h.parse:
        _utility(v, h, piece, ctx, masker)
        return v
    why = "parse error"
    try:
        tree = _parse(piece)
    except (ParseError, TokenError) as e:
        tree = None
        why = str(e).splitlines()[0] if str(e) else why
    kind = next((k for cls, k in _KIND_OF if isinstance(tree, cls)), None) if tree else None
    if tree is None or isinstance(tree, exp.Command) or (kind is None and h.ddl):
        if h.ddl:
            # Recognized DDL that sqlglot does not model: police its targets by name.
            # DROP/COMMENT evaluate nothing; CREATE may (AS query, function bodies), and
            # so may ALTER wherever it holds parentheses (ALTER DOMAIN ... CHECK (...),
            # SET EXPRESSION AS (...), ALTER POLICY ... USING (...)).
            _gate(v, ctx, writes_ok=False)
            if v.action != "block":
                checks.token_targets(v, piece, ctx)
            parens = any(t.token_type == TokenType.L_PAREN for t in piece.tokens)
            if v.action != "block" and (h.kind == "create" or (h.kind == "alter" and parens)):
                _unmodelled(v, piece, ctx, f"{h.kind.upper()} statement the parser does not model")
            return v
        why = why if tree is None else "the parser read it only as a generic command"
        _unmodelled(v, piece, ctx, why)
        return v
    if kind is None or (h.kind not in ("select",) and kind != h.kind and not h.ddl):
        _unmodelled(v, piece, ctx, f"{h.kind.upper()} parsed as {type(tree).__name__}")
        return v
    if isinstance(tree, exp.Query) and tree.args.get("into") is not None:
        kind, v.ddl = "create", True  # SELECT INTO is CREATE TABLE AS
    v.kind = kind
    statement(v, tree, ctx, masker, piece)
    return v


def _parse(piece: Piece) -> exp.Expr | None:
    """Parse from the splitter's tokens (no second tokenization)."""
    if piece.tokens[0].token_type == TokenType.COPY:
        tree: exp.Expr | None = parse_copy(piece, _PG)  # sqlglot reads part of PostgreSQL's COPY
    else:
        trees = _PG.parser().parse(list(piece.tokens), piece.source)
        tree = trees[0] if len(trees) == 1 else None
    if tree is not None:
        callnames.mark(tree, piece.tokens)  # calls by the names as written
    return tree


def _unmodelled(v: Verdict, piece: Piece, ctx: Context, why: str) -> None:
    """A statement the parser cannot model (CREATE ROLE/TYPE/DOMAIN, ...).

    For a user no rule applies to, it runs when its kind is allowed and it names
    no relation any rule governs: there is nothing of theirs to police, and
    refusing only breaks tools. Anyone else gets `defaults.unparsed`.
    """
    if ctx.has_policy and v.kind == "copy":
        # COPY ... WHERE, COPY (DELETE ... RETURNING) TO: rows written or read out of
        # the parser's sight. Refused whatever defaults.unparsed says.
        v.action, v.error, v.reason = "block", NotUnderstood(why), why
        return
    unnamed = v.kind == "unknown" and not ctx.defaults.allows_kind("unknown")
    if ctx.has_policy or unnamed or checks.names_governed(piece, ctx):
        v.unparsed(ctx, why)
        return
    _gate(v, ctx, writes_ok=False)
    if v.action != "block":
        v.reason = f"not modelled by the parser ({why}); no rule applies to {ctx.who.user}"


def _with_inner(
    v: Verdict, h: Head, piece: Piece, ctx: Context, masker: Masker, extended: bool
) -> Verdict:
    assert h.inner is not None
    try:
        toks = tuple(tokenize(h.inner))
    except SplitError as e:
        v.unparsed(ctx, str(e))
        return v
    inner = Piece(h.inner, h.inner, toks, h.inner, 0)
    ih = head(inner)
    explain_execute = h.kind == "explain" and ih.kind == "execute"
    if explain_execute and h.analyze and ctx.has_policy:
        # The prepared statement's plan with real row counts, rows its filter removed
        # included: the same side channel as EXPLAIN ANALYZE of a governed read.
        v.unparsed(ctx, "EXPLAIN ANALYZE EXECUTE reports row counts the rules may withhold")
        return v
    if (ih.kind not in PARSED and not explain_execute) or ih.inner is not None:
        _unmodelled(v, piece, ctx, f"{h.kind.upper()} of {ih.kind.upper()} is not supported")
        return v
    if h.kind == "declare" and ih.kind != "select":
        _unmodelled(v, piece, ctx, "DECLARE of something other than a query")
        return v
    _gate(v, ctx, writes_ok=False)
    if v.action == "block":
        return v
    sub = decide(inner, pushparams.inner_context(h.kind, h.prefix, ctx), masker, extended=extended)
    if h.analyze and sub.action != "block" and not explain_execute:
        sub_tree = _parse(inner)
        if sub_tree is not None:
            checks.explain_analyze(sub, sub_tree, ctx)
    for name in ("tables", "columns", "functions", "copy_out", "has_where", "has_limit", "unknown"):
        setattr(v, name, getattr(sub, name))
    v.offset = sub.offset
    v.lookups = _shifted(sub.lookups, v.literals, sub.literals)
    v.action, v.error, v.rules, v.reason = sub.action, sub.error, sub.rules, sub.reason
    if sub.change is not None and h.kind in ("prepare", "declare"):
        # It changes settings at each EXECUTE or FETCH, which the session does not follow.
        v.change = Change("unknown", "*")
    elif sub.change is not None and h.analyze:
        v.change = sub.change
    if sub.action == "rewrite":
        v.sql = h.prefix + sub.sql
    return v


def _shifted(
    found: tuple[Lookup, ...], outer: tuple[str, ...], inner: tuple[str, ...]
) -> tuple[Lookup, ...]:
    """An inner statement's lookups, pointing into the outer statement's literals
    (PREPARE s(numeric(10, 2)) AS ... has literals of its own before the query)."""
    skip = len(outer) - len(inner)
    if not found or skip == 0:
        return found if outer == inner else ()
    if skip < 0 or outer[skip:] != inner:
        return ()
    return tuple(
        dataclasses.replace(x, literal=x.literal + skip) if x.literal >= 0 else x for x in found
    )


# Session plumbing, gated by what it runs rather than by its own kind: EXECUTE runs a
# statement decided at its PREPARE, DEALLOCATE and DISCARD only drop session state,
# and PREPARE is gated by the kind of the statement it prepares.
PLUMBING = frozenset({"prepare", "execute", "deallocate", "discard"})


def _gate(v: Verdict, ctx: Context, *, writes_ok: bool, kind: str | None = None) -> None:
    kind = kind or v.kind
    if ctx.defaults.allows_kind(kind) or writes_ok or kind in PLUMBING:
        return
    v.block("defaults.statements", f"{kind.upper()} statements are not allowed")


def _utility(v: Verdict, h: Head, piece: Piece, ctx: Context, masker: Masker) -> None:
    """Statements without a tree: SET, SHOW, transaction control, cursors, utilities."""
    v.search_path = search_path_of(h)
    v.change = statement_change(h, piece)
    if h.kind == "do":  # its code may SET anything, out of the engine's sight
        v.change = Change("unknown", "*")
    if h.kind == "set":
        checks.setting(v, h)
    _gate(v, ctx, writes_ok=False)
    if v.action == "block":
        return
    if h.kind == "do" and ctx.has_policy:
        v.unparsed(ctx, "DO runs code the proxy cannot see")
    elif h.kind == "call" and ctx.has_policy:
        checks.call(v, piece, ctx)
        if v.action != "block":
            _police_args(v, piece, name_end(piece, 1), ctx, masker)
    elif h.kind == "execute" and ctx.has_policy:
        _police_args(v, piece, name_end(piece, 1), ctx, masker)
    elif h.kind in checks.TOUCHES_TABLES:
        checks.token_targets(v, piece, ctx)


def _police_args(v: Verdict, piece: Piece, at: int, ctx: Context, masker: Masker) -> None:
    """EXECUTE s(args) / CALL p(args): the server evaluates the arguments as it would
    `SELECT args`, so that SELECT is decided like any other and spliced back in."""
    try:
        args = arg_list(piece, at)
    except BadArgs as e:
        v.unparsed(ctx, f"{v.kind.upper()}: {e}")
        return
    if args is None:
        return
    text = f"SELECT {args.text}"
    sub = Verdict(kind=v.kind, text=text, sql=text)
    try:
        toks = tokenize(text)
        trees = _PG.parser().parse(toks, text)
    except (ParseError, TokenError, SplitError):
        toks, trees = [], []
    tree = trees[0] if len(trees) == 1 else None
    if tree is not None:
        callnames.mark(tree, toks)
    extra = tree is not None and any(val for key, val in tree.args.items() if key != "expressions")
    if not isinstance(tree, exp.Select) or extra:
        v.unparsed(ctx, f"{v.kind.upper()} arguments the parser cannot read as expressions")
        return
    statement(sub, tree, ctx, masker)
    v.tables, v.columns, v.functions = sub.tables, sub.columns, [*v.functions, *sub.functions]
    v.unknown += sub.unknown
    for r in sub.rules:
        v.note(r)
    if sub.action == "block":
        v.action, v.error, v.reason = "block", sub.error, sub.reason
        v.rules = [*sub.rules, *(r for r in v.rules if r not in sub.rules)]
    elif sub.action == "rewrite":
        exprs = ", ".join(_PG.generate(e, copy=False) for e in tree.expressions)
        v.action, v.reason = "rewrite", sub.reason
        v.sql = args.splice(piece.parse_text, exprs)


def statement(
    v: Verdict, tree: exp.Expr, ctx: Context, masker: Masker, piece: Piece | None = None
) -> None:
    """Analyze, check and (if allowed) rewrite one parsed statement in place.

    `piece`: the statement's own text, whose literals `v.lookups` points into (not
    given for the synthetic SELECT of EXECUTE or CALL arguments)."""
    expansion = views.expand(tree, ctx)
    for r in expansion.refused:
        v.block(r.rule, f"{r.view} reads governed tables and cannot be expanded: {r.why}")
    found = collect(tree)
    occs = found.occs
    pinned: list[Occ] = []
    unknown: list[Occ] = []
    for o in occs:
        o.qualified, o.relation = ctx.resolve_table(o.schema, o.name)
        ungoverned = not o.schema and ctx.rule_for(o.qualified) is None
        system = o.qualified.startswith(("pg_catalog.", "information_schema."))
        if not ctx.knows_relation(o.qualified, o.relation) and not _creates(tree, o):
            unknown.append(o)
        if ungoverned and not system and ctx.governed_elsewhere(o.qualified, o.name):
            pinned.append(o)  # ambiguous: pin it to what we decided it reads or writes
    bind_colmaps(occs)
    attribute_columns(found.nodes, occs)
    attribute_copy(tree, occs)
    if piece is not None and touches(occs, ctx.subject_columns):
        # Before any rewrite replaces a governed table with its masking subquery.
        starts = literal_starts(piece.tokens, piece.parse_text, piece.base)
        v.lookups = find(found.nodes, occs, ctx.subject_columns, starts)
    checks.describe(v, tree, occs, found.calls, ctx)

    checks.writes(v, occs, ctx)  # a governed target names its rule before the kind gate
    checks.cascade(v, tree, ctx)
    _gate(v, ctx, writes_ok=checks.write_consent(v.kind, occs, ctx))
    # Data-modifying CTEs (WITH d AS (DELETE ...) SELECT ...) are gated by their own kind.
    for dml in found.nodes.dmls:
        if dml is not tree:
            k = next(k for cls, k in _KIND_OF if isinstance(dml, cls))
            nested = [o for o in occs if o.node is dml.this or o.node.parent is dml.this]
            _gate(v, ctx, writes_ok=checks.write_consent(k, nested, ctx), kind=k)
    if isinstance(tree, exp.Copy):
        checks.copy(v, tree, ctx)
    for o in occs:
        if not o.write:
            checks.read(v, o, ctx)
    if ctx.has_policy:
        checks.unknown_relations(v, unknown, ctx)
        checks.functions(v, found.calls, ctx)
    v.change = _set_config(found.calls)
    if v.action == "block":
        return

    changed = expansion.changed
    for o in pinned:
        o.node.set("db", exp.to_identifier(o.qualified.split(".", 1)[0], quoted=True))
        changed = True
    pushed = pushdown.plan(occs, ctx)  # before any FROM item is replaced
    for o in occs:
        rule = ctx.rule_for(o.qualified)
        if rule is None:
            continue
        v.note(rule.id)
        try:
            if o.write:
                writecheck.check_new_rows(v, tree, o, rule, ctx, masker)
                if v.action == "block":
                    return
                changed |= writecheck.fence(tree, o, ctx, masker)
            elif rule.row_filter or rule.columns:
                text = masker.subquery_text(
                    rule,
                    o.qualified,
                    o.relation,
                    ctx.who,
                    ctx.pin,
                    ctx.path,
                    o.node,
                    pushed.get(id(o), ()),
                )
                _unqualify_columns([c for c, _ in found.nodes.columns], o)
                # Our own generated SQL, spliced in verbatim (a Var prints its text).
                o.node.replace(as_from_item(exp.Var(this=text), o.node))
                changed = True
        except MissingAttribute as e:
            v.block(rule.id, f"user {ctx.who.user} has no attribute :{e.name}")
            return
        except UnknownColumns as e:
            if o.relation is None:
                v.unknown.append(o.qualified)  # a refreshed catalog may list them
            v.block(rule.id, f"the catalog has no column list for {e}; cannot mask it")
            return
    if isinstance(tree, exp.Copy) and changed:
        checks.copy_to_query(tree)
    if changed:
        v.action = "rewrite"
        v.sql = _PG.generate(tree, copy=False)  # the tree is ours; skip sqlglot's deep copy
        v.reason = v.reason or "row filter / column policies applied"


def _creates(tree: exp.Expr, o: Occ) -> bool:
    """Is `o` the relation the statement creates (CREATE ..., SELECT ... INTO)?"""
    if not o.write:
        return False
    if isinstance(tree, exp.Create):
        # The new object only: a table it names otherwise (INDEX ON t, REFERENCES t,
        # PARTITION OF t, LIKE t) must be one the catalog knows.
        target = tree.this
        while isinstance(target, exp.Schema | exp.UserDefinedFunction):
            target = target.this  # CREATE TABLE t (cols), CREATE FUNCTION f(args)
        return o.node is target
    return isinstance(o.node.parent, exp.Into)


def _unqualify_columns(columns: list[exp.Column], o: Occ) -> None:
    """`public.people.name` must become `people.name` once people is a subquery alias."""
    for col in columns:
        if col.args.get("db") is not None and col.table == o.node.name:
            col.set("db", None)
            col.set("catalog", None)


def _set_config(calls: list[Call]) -> Change | None:
    """What set_config() calls do to tracked settings; two or more: unknown (order)."""
    found = [
        c
        for c in calls
        if c.schema in ("", "pg_catalog") and any(n.lower() == "set_config" for n in c.names)
    ]
    changes = [ch for c in found if (ch := set_config_change(c.args)) is not None]
    if len(changes) > 1:
        return Change("unknown", "*")
    return changes[0] if changes else None
