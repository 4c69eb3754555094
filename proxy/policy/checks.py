"""The individual checks decide.py runs on a statement; each may block the verdict.

Kept apart from decide.py so each rule of the policy reads on its own: reads of
governed tables (deny, access, views, unknown tables, side channels), writes,
COPY, function calls, SET of parser-relevant settings, and statements checked
only by the names in their tokens.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.tokenizer_core import TokenType

from proxy.catalog import SYSTEM_SCHEMAS
from proxy.gucs import parse_search_path
from proxy.policy.analyze import Call, Occ, collect
from proxy.policy.builtins import BUILTIN_FUNCTIONS
from proxy.policy.context import Context
from proxy.policy.functions import (
    INFORMATION_SCHEMA_HELPERS,
    SIDE_CHANNEL_COLUMNS,
    dangerous,
    side_channel,
)
from proxy.policy.kinds import Head
from proxy.policy.split import Piece
from proxy.policy.verdict import Verdict
from proxy.rules import TableRule
from proxy.textmode import parser_hazard

# Utility statements that act on named tables: a governed one needs the rule's consent.
TOUCHES_TABLES = frozenset(
    {"grant", "revoke", "comment", "cluster", "reindex", "refresh", "security_label", "lock"}
)
_WRITE_DDL = {"create", "alter", "drop"}


def restrictive(rule: TableRule) -> bool:
    return rule.access == "deny" or bool(rule.row_filter) or bool(rule.columns)


def describe(v: Verdict, tree: exp.Expr, occs: list[Occ], calls: list[Call], ctx: Context) -> None:
    """Fill the audit facts: tables, columns, functions, WHERE/LIMIT/OFFSET, COPY TO."""
    seen: dict[str, None] = {}
    for o in occs:
        seen.setdefault(o.qualified)
    v.tables = list(seen)
    cols: dict[str, None] = {}
    for o in occs:
        names = o.column_names() if o.whole else sorted(o.columns)
        for c in names:
            cols.setdefault(f"{o.qualified}.{c}")
    v.columns = list(cols)
    v.functions = list(dict.fromkeys(ctx.resolve_function(c.schema, c.names) for c in calls))
    body = tree.expression if isinstance(tree, exp.Insert) else tree
    if isinstance(tree, exp.Copy) and isinstance(tree.this, exp.Subquery):
        body = tree.this.this
    if isinstance(body, exp.Expr):
        v.has_where = body.args.get("where") is not None
        v.has_limit = body.args.get("limit") is not None or body.args.get("fetch") is not None
        off = body.args.get("offset")
        if isinstance(off, exp.Offset) and isinstance(off.expression, exp.Literal):
            try:
                v.offset = int(off.expression.this)
            except ValueError:
                v.offset = None
    if isinstance(tree, exp.Copy) and not tree.args.get("kind"):
        v.copy_out = True


def cascade(v: Verdict, tree: exp.Expr, ctx: Context) -> None:
    """TRUNCATE ... CASCADE also empties every table that references the named ones,
    governed ones included, out of the statement's sight."""
    option = str(tree.args.get("option") or "").upper()
    if ctx.has_policy and isinstance(tree, exp.TruncateTable) and option == "CASCADE":
        v.block("defaults.statements", "TRUNCATE ... CASCADE may empty governed tables")


def write_consent(kind: str, occs: list[Occ], ctx: Context) -> bool:
    """True when every write target is a governed table whose rule allows this kind."""
    targets = [ctx.rule_for(o.qualified) for o in occs if o.write]
    return bool(targets) and all(r is not None and kind in r.statements for r in targets)


def writes(v: Verdict, occs: list[Occ], ctx: Context) -> None:
    """Writes to governed tables need the rule's consent and must not read masked columns."""
    kind = v.kind
    for o in (o for o in occs if o.write):
        if ctx.has_policy and o.qualified == "pg_catalog.pg_settings":
            # UPDATE pg_settings is set_config(): search_path, standard_conforming_strings...
            v.block("defaults.functions", "writing pg_settings changes settings behind the proxy")
            continue
        rule = ctx.rule_for(o.qualified)
        if rule is None:
            view_rule = _governed_base(o, ctx)
            if view_rule is not None:
                v.block(view_rule.id, f"{o.qualified} is over governed tables; writes are blocked")
            continue
        if rule.access == "deny":
            v.block(rule.id, f"access to {o.qualified} is denied")
        elif kind not in rule.statements:
            v.block(rule.id, f"{kind.upper()} on governed table {o.qualified} is not allowed")
        elif o.whole or o.columns & set(rule.columns):
            v.block(rule.id, f"{kind.upper()} reads masked columns of {o.qualified}")
        elif kind in ("merge", "truncate") and rule.row_filter:
            v.block(rule.id, f"{kind.upper()} cannot be limited to the permitted rows")
        elif rule.row_filter and _upsert(o):
            v.block(
                rule.id, "INSERT ... ON CONFLICT DO UPDATE could change rows outside the filter"
            )


def _upsert(o: Occ) -> bool:
    insert = o.node.find_ancestor(exp.Insert)
    conflict = insert.args.get("conflict") if insert is not None else None
    return conflict is not None and "UPDATE" in str(conflict.args.get("action") or "").upper()


def _governed_base(o: Occ, ctx: Context) -> TableRule | None:
    rel = o.relation
    if rel is None or rel.kind not in ("view", "matview"):
        return None
    for dep in rel.depends_on:
        r = ctx.rule_for(dep)
        if r is not None and restrictive(r):
            return r
    return None


def read(v: Verdict, o: Occ, ctx: Context) -> None:
    rule = ctx.rule_for(o.qualified)
    if ctx.has_policy:
        why = side_channel(o.qualified)
        if why:
            v.block("defaults.side_channels", why)
            return
        hidden = SIDE_CHANNEL_COLUMNS.get(o.qualified, frozenset())
        if hidden and (o.whole or o.columns & hidden):
            v.block("defaults.side_channels", f"{o.qualified}.query holds other sessions' SQL")
            return
    if rule is None:
        base = _governed_base(o, ctx)
        if base is not None:
            v.block(base.id, f"{o.qualified} reads governed tables; only a rule on it can allow it")
        elif (
            ctx.has_policy
            and ctx.defaults.unknown_tables == "block"
            and o.qualified.split(".", 1)[0] not in SYSTEM_SCHEMAS
        ):
            v.block("defaults.unknown_tables", f"no rule allows {o.qualified}")
        return
    v.note(rule.id)
    if rule.access == "deny":
        v.block(rule.id, f"access to {o.qualified} is denied")
        return
    denied = {c for c, p in rule.columns.items() if p == "deny"}
    if not denied:
        return
    if o.whole:
        v.block(rule.id, f"reads every column of {o.qualified}, including denied ones")
    elif o.columns & denied:
        cols = ", ".join(sorted(o.columns & denied))
        v.block(rule.id, f"column {o.qualified}.{cols} is denied")


def unknown_relations(v: Verdict, unknown: list[Occ], ctx: Context) -> None:
    """A relation made after the snapshot may be a view over, or a partition of, a
    governed table: what it holds is unknown until the catalog is refreshed. A rule
    that names it decides it as usual."""
    for o in unknown:
        if ctx.rule_for(o.qualified) is None:
            shown = o.qualified if o.schema else o.name  # unqualified: no schema to name
            v.unknown.append(shown)
            if (
                not o.schema
                and o.name.startswith("pg_")
                and ctx.knows_relation(f"pg_catalog.{o.name}", None)
            ):
                v.block(
                    "defaults.catalog",
                    f"relation {o.name} could be one in {o.qualified.split('.')[0]}, which the"
                    f" search_path puts before pg_catalog: qualify it (pg_catalog.{o.name})",
                )
                return
            v.block("defaults.catalog", f"relation {shown} is not in the proxy's catalog")


def _ambiguous(v: Verdict, c: Call, q: str, ctx: Context) -> bool:
    """An unqualified call of a name more than one schema defines is refused.

    Which one the server calls depends on its search_path at the moment it runs,
    which the proxy follows but cannot be sure of (a statement pipelined behind a
    SET, a rolled-back SET, a set_config in a branch never taken, a prepared
    statement re-planned under a later path, `$user` after SET ROLE). Qualified
    calls and names only one schema defines leave nothing to guess.
    """
    name = q.partition(".")[2]
    schemas = [s for s in ctx.user_functions.get(name.lower(), ()) if s != "pg_temp"]
    if f"pg_catalog.{name}" in BUILTIN_FUNCTIONS:
        schemas = ["pg_catalog", *schemas]
    schemas = list(dict.fromkeys(schemas))
    if len(schemas) < 2:
        return False
    where = ", ".join(schemas)
    v.block(
        "defaults.functions",
        f"function {c.names[0]} is defined in more than one schema ({where}); "
        "which one runs depends on the search_path: qualify the call",
    )
    return True


def _ahead_of_catalog(path: tuple[str, ...]) -> list[str]:
    """Schemas a function lookup searches before pg_catalog (pg_temp is never searched
    for functions; the other system schemas only a superuser can create in)."""
    out: list[str] = []
    for s in path:
        if s == "pg_catalog":
            return out
        if s != "pg_temp" and s not in SYSTEM_SCHEMAS:
            out.append(s)
    return out


def _shadowable(v: Verdict, c: Call, q: str, ctx: Context) -> bool:
    """An unqualified call taken for a built-in, under a search_path that lists another
    schema before pg_catalog, is refused: a function of that name created there since
    the catalog was read (`public.left`) is the one PostgreSQL would run."""
    ahead = _ahead_of_catalog(ctx.path) if q.startswith("pg_catalog.") else []
    if not ahead:
        return False
    v.block(
        "defaults.functions",
        f"function {c.names[0]} could be one in {', '.join(ahead)}, which the search_path "
        f"puts before pg_catalog: qualify the call (pg_catalog.{c.names[0]})",
    )
    return True


def functions(v: Verdict, calls: list[Call], ctx: Context) -> None:
    """Each call by the name the user wrote (callnames.py), never by sqlglot's name."""
    for c in calls:
        q = ctx.resolve_function(c.schema, c.names)
        schema, _, name = q.partition(".")
        if not c.schema and (_ambiguous(v, c, q, ctx) or _shadowable(v, c, q, ctx)):
            return
        frule = ctx.function_rule(q)
        if frule is not None:
            v.note(frule.id)  # a rule naming it allows it, known to the snapshot or not
            continue
        if not ctx.knows_function(q, c.anonymous):
            # Never assumed a built-in: created after the snapshot, it may be anything.
            shown = q if c.schema else c.names[0]
            v.unknown.append(shown)
            v.block("defaults.functions", f"function {shown} is not in the proxy's catalog")
            return
        if schema == "information_schema" and name in INFORMATION_SCHEMA_HELPERS:
            continue
        if schema != "pg_catalog":
            v.block("defaults.functions", f"function {q} is not allowed by any functions: rule")
            return
        if name == "set_config" and _literal_search_path(v, c):
            continue
        why = dangerous(name, list(c.args))
        if why:
            v.block("defaults.functions", why)
            return


def _literal_search_path(v: Verdict, c: Call) -> bool:
    """set_config('search_path', '<literal>', ...) is tracked like SET search_path."""
    if len(c.args) < 2 or c.args[0] is None or c.args[1] is None:
        return False
    if c.args[0].strip().lower() != "search_path":
        return False
    v.search_path = tuple(parse_search_path(c.args[1]))
    return True


def copy(v: Verdict, tree: exp.Copy, ctx: Context) -> None:
    files = tree.args.get("files") or []
    target = files[0] if files else None
    to_client = isinstance(target, exp.Identifier) and target.name.upper() in ("STDOUT", "STDIN")
    if ctx.has_policy and not to_client:
        v.block("defaults.side_channels", "COPY to or from a server file or program")


def copy_to_query(tree: exp.Copy) -> None:
    """COPY t (cols) TO STDOUT with t now a subquery: PostgreSQL wants COPY (query) TO."""
    this = tree.this
    cols: list[exp.Expr] = []
    if isinstance(this, exp.Schema):
        cols = [exp.column(c.copy()) for c in this.expressions]
        this = this.this
    # Only the masking subquery has an alias; COPY (query) TO is already a query
    # (and PostgreSQL before 16 refuses a FROM subquery without an alias).
    if isinstance(this, exp.Subquery) and this.args.get("alias") is not None:
        select = exp.Select(expressions=cols or [exp.Star()]).from_(this)
        tree.set("this", exp.Subquery(this=select))


def explain_analyze(v: Verdict, tree: exp.Expr, ctx: Context) -> None:
    """EXPLAIN ANALYZE reports real row counts (rows removed by the filter): a side channel."""
    for o in collect(tree).occs:
        q, _ = ctx.resolve_table(o.schema, o.name)
        rule = ctx.rule_for(q)
        if rule is not None and restrictive(rule):
            v.block(rule.id, f"EXPLAIN ANALYZE of governed table {q} reveals row counts")
            return


def setting(v: Verdict, h: Head) -> None:
    """SETs that would make PostgreSQL read statement text differently from the proxy."""
    if h.reset or not h.setting:
        return
    hazard = parser_hazard(h.setting, h.values[0] if h.values else "")
    if hazard is not None:
        v.block("defaults.parser", hazard)


def _names(piece: Piece) -> list[tuple[str, str]]:
    """Every `name` and `schema.name` in the tokens, folded."""
    toks = piece.tokens
    out: list[tuple[str, str]] = []
    ident = (TokenType.VAR, TokenType.IDENTIFIER)

    def fold(i: int) -> str:
        t = toks[i]
        return t.text if t.token_type == TokenType.IDENTIFIER else t.text.lower()

    for i, t in enumerate(toks):
        if t.token_type not in ident and not t.text.isidentifier():
            continue
        if i + 2 < len(toks) and toks[i + 1].token_type == TokenType.DOT:
            out.append((fold(i), fold(i + 2)))
        out.append(("", fold(i)))
    return out


def token_targets(v: Verdict, piece: Piece, ctx: Context) -> None:
    """A statement only known by name: any governed table it names needs the rule's consent."""
    for schema, name in _names(piece):
        q, _ = ctx.resolve_table(schema, name)
        rule = ctx.rule_for(q)
        if rule is not None and v.kind not in rule.statements:
            v.block(rule.id, f"{v.kind.upper()} on governed table {q} is not allowed")
            return


def call(v: Verdict, piece: Piece, ctx: Context) -> None:
    """CALL [schema.]proc(...): procedures need a functions: rule like functions do."""
    toks = piece.tokens

    def fold(i: int) -> str:
        t = toks[i] if i < len(toks) else None
        if t is None or t.token_type == TokenType.L_PAREN:
            return ""
        return t.text if t.token_type == TokenType.IDENTIFIER else t.text.lower()

    schema, name = "", fold(1)
    if len(toks) > 3 and toks[2].token_type == TokenType.DOT:
        schema, name = name, fold(3)
    if not name:
        v.unparsed(ctx, "CALL without a procedure name")
        return
    q = ctx.resolve_function(schema, (name,))
    frule = ctx.function_rule(q)
    if frule is not None:
        v.note(frule.id)
    elif not ctx.knows_function(q, anonymous=True):
        shown = q if schema else name  # made after the snapshot: a refresh may resolve it
        v.unknown.append(shown)
        v.block("defaults.functions", f"procedure {shown} is not in the proxy's catalog")
    else:
        v.block("defaults.functions", f"procedure {q} is not allowed by any functions: rule")


def names_governed(piece: Piece, ctx: Context) -> bool:
    """Does a statement known only by its tokens name a relation any rule governs (for
    anyone), or a partition or child of one? Only names the catalog knows count."""
    for schema, name in _names(piece):
        schemas = [schema] if schema else [*ctx.path, *ctx.catalog.schemas_with(name)]
        for s in schemas:
            rel = ctx.catalog.get(s, name)
            if rel is None:
                continue
            if any(r.names(q) for q in (rel.qualified, *rel.parents) for r in ctx.every_rule):
                return True
    return False
