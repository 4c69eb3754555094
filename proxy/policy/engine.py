"""The policy engine: (SQL text, identity facts) in, decision out. Pure and cached.

Theory of operation
-------------------
`decide(sql, facts)` splits the text into statements exactly as PostgreSQL
will (split.py) and decides each one against a `Context`: the identity's
matching rules, the session's search_path and the catalog snapshot
(decide.py). A statement is allowed as written, rewritten (every read of a
governed table replaced by a masking subquery), or blocked with the id of the
first rule that refused it. A multi-statement string is blocked as a whole if
any part is; otherwise the parts (original or rewritten) are joined by "; ".

Every expression the server will evaluate is policed where it stands: utility
statements that evaluate an argument list (EXECUTE, CALL) are decided as the
SELECT of those arguments (utilexpr.py) and rewritten in place; bodies
(PREPARE, DECLARE, EXPLAIN, COPY (query), CREATE ... AS) as statements of their
own; VALUES, DEFAULT, RETURNING, LIMIT and the rest are in the parsed tree.

Fail closed: text that does not tokenize, statements sqlglot cannot model and
kinds the engine does not know follow `defaults.unparsed`, except for a user
no rule applies to, whose unmodelled statement runs when its kind is allowed
and it names no governed relation. For users with a policy, relations and
functions the catalog snapshot does not know are refused, and reported in
`StatementInfo.unknown` so that the caller can refresh the catalog and decide
again. Two statements in one Parse get PostgreSQL's own 42601.

Dry run: rules in `mode: dry_run` are left out of the enforced context; when
any such rule fits the identity (or the whole set is in dry-run mode) the
statement is decided a second time with them, and what would have happened is
reported in `would` with the rule ids, while `action` says what is enforced.

Decisions are cached by (text, extended, the Parse's parameter types, every
fact a match depends on, rules version, catalog version); the cache is a plain
dict LRU, safe under asyncio.
Behind it, a second cache shares one decision between texts that differ only
in literal values the decision provably ignores (normcache.py, shape.py), so
the simple protocol's `WHERE id = 42`, `WHERE id = 43`... are parsed once.

Known limits (by design, documented for DBAs):
- A view over governed tables is expanded to its definition (views.py), which
  reads the base tables with the user's privileges, not the view owner's: the
  user needs SELECT on them. Materialized views, and views that cannot be
  expanded (unparsable definition, nesting past 16, cycles), are refused unless
  a rule names them; a `deny` column the definition selects refuses every read
  of the view; writes through such views are refused.
- Writes are held to the row filter (writecheck.py): UPDATE/DELETE get it with
  their own WHERE fenced behind it; new rows are checked before the statement
  is sent, which is exact only for UPDATEs that leave the filter's columns alone
  and INSERT ... VALUES of literals under `column = value` filters. Other writes
  to filtered tables (INSERT ... SELECT, bound parameters, upserts, MERGE, COPY
  FROM) are refused.
- Server-side code (triggers, FK cascades, functions a `functions:` rule allows)
  is out of the parser's sight.
- COPY is read in PostgreSQL's whole grammar (copystmt.py: options with or
  without WITH, the legacy words, COPY BINARY t) except COPY ... WHERE and
  COPY (INSERT/UPDATE/DELETE ... RETURNING) TO, which are refused for users
  with a policy. COPY t TO reads t's columns like SELECT.
- The catalog snapshot is refreshed when a statement names something it does
  not know (enforce.py), but a known name whose meaning changed outside the
  proxy (CREATE OR REPLACE VIEW, ATTACH PARTITION) is seen at the next refresh.
- Temporary tables are known only as `pg_temp.name`; an unqualified reference
  to one is an unknown relation for users with a policy.
- Built-in names are PostgreSQL 16's (builtin_*.txt); calls are checked by the
  name as written, whatever node sqlglot made of them (callnames.py).
- Names resolve against the catalog snapshot and the session's tracked
  search_path; where that could be wrong (an ungoverned name that is governed in
  another schema) the reference is pinned to the schema decided on.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from proxy.catalog import Catalog
from proxy.errors import NotUnderstood, ProxyError, SyntaxProblem
from proxy.gucs import Change
from proxy.identity import SessionFacts
from proxy.policy.context import Context, lower_functions
from proxy.policy.decide import decide
from proxy.policy.lookups import Lookup, subject_columns
from proxy.policy.normcache import NormCache
from proxy.policy.pathknown import PathInString
from proxy.policy.purposecheck import PurposeInString
from proxy.policy.rewrite import Masker
from proxy.policy.split import Piece, SplitError, split
from proxy.policy.verdict import Verdict
from proxy.rules import RuleSet

Action = Literal["allow", "rewrite", "block"]
log = logging.getLogger("oversight.policy")
MAX_SQL = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StatementInfo:
    """One per non-empty statement in the text, in order."""

    kind: str
    tables: tuple[str, ...]
    columns: tuple[str, ...]
    functions: tuple[str, ...]
    fingerprint: str
    redacted: str
    literals: tuple[str, ...]
    has_where: bool
    has_limit: bool
    offset: int | None
    copy_out: bool
    ddl: bool
    search_path: tuple[str, ...] | None
    action: str = "allow"  # this statement's own decision
    rewritten: str | None = None
    # Relations (and functions) the catalog snapshot did not know: the enforcer
    # refreshes the catalog and decides again before answering.
    unknown: tuple[str, ...] = ()
    change: Change | None = None  # to tracked settings or savepoints (proxy/gucs.py)
    # Values compared with a subject's key or lookup columns, by position in
    # `literals` or by parameter number (lookups.py): the ledger's `looked_up`.
    lookups: tuple[Lookup, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    sql: str
    error: ProxyError | None
    rules: tuple[str, ...]
    reason: str
    dry_run: bool
    would: str | None
    statements: tuple[StatementInfo, ...]


def _info(v: Verdict) -> StatementInfo:
    return StatementInfo(
        kind=v.kind,
        tables=tuple(v.tables),
        columns=tuple(v.columns),
        functions=tuple(v.functions),
        fingerprint=v.fingerprint,
        redacted=v.redacted,
        literals=v.literals,
        has_where=v.has_where,
        has_limit=v.has_limit,
        offset=v.offset,
        copy_out=v.copy_out,
        ddl=v.ddl,
        search_path=v.search_path,
        action=v.action,
        rewritten=v.sql if v.action == "rewrite" else None,
        unknown=tuple(dict.fromkeys(v.unknown)),
        change=v.change,
        lookups=v.lookups,
    )


class PolicyEngine:
    def __init__(
        self,
        rules: RuleSet,
        catalog: Catalog,
        *,
        hash_salt: str | None = None,
        cache_size: int = 10_000,
    ) -> None:
        self.rules = rules
        self.catalog = catalog
        self.masker = Masker(hash_salt)
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[object, ...], Decision] = OrderedDict()
        self._shapes: NormCache[Decision] = NormCache(cache_size)
        self._user_functions = lower_functions(catalog)
        self._subject_columns = subject_columns(rules.subjects)
        self._hours = rules.uses_hours
        self._purpose = rules.uses_purpose
        self._dry = (
            rules.defaults.mode == "dry_run"
            or any(r.mode == "dry_run" for r in rules.rules)
            or any(r.mode == "dry_run" for r in rules.functions)
        )

    def decide(
        self,
        sql: str,
        facts: SessionFacts,
        *,
        extended: bool = False,
        param_types: tuple[int, ...] | None = None,
    ) -> Decision:
        """`param_types`: a Parse's declared parameter type OIDs (0: unspecified), which
        decide whether `col = $1` may be copied below a row filter (pushdown.py)."""
        key = self._key(sql, facts, extended, param_types)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        # Same text with other literal values: the shape cache (normcache.py), keyed
        # on the same facts as this one (everything in the key after the text).
        decision, keep = self._shapes.decide(
            sql,
            key[1:],
            lambda text, pieces: self._fresh(text, facts, extended, pieces, param_types),
        )
        if keep:
            self._cache[key] = decision
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return decision

    def _fresh(
        self,
        sql: str,
        facts: SessionFacts,
        extended: bool,
        pieces: list[Piece] | None = None,
        params: tuple[int, ...] | None = None,
    ) -> tuple[Decision, bool]:
        """A decision taken from scratch, and whether it may be cached. `pieces`: the
        text already split (by the shape cache), so that it is not split twice."""
        try:
            return self._decide(sql, facts, extended, pieces, params), True
        except Exception as e:  # a bug or a sqlglot surprise must fail closed, not crash
            log.exception("policy engine failed on a statement; blocking it")
            err = NotUnderstood(f"internal policy error ({type(e).__name__})")
            return Decision("block", sql, err, (), err.reason, False, None, ()), False

    def _key(
        self, sql: str, facts: SessionFacts, extended: bool, params: tuple[int, ...] | None
    ) -> tuple[object, ...]:
        when = None
        if self._hours:
            now = facts.now or datetime.now().astimezone()
            when = (now.hour, now.minute)
        return (
            sql,
            extended,
            params,
            facts.user,
            facts.groups,  # from the identity sources: a revoke must not hit an old decision
            facts.attributes,
            facts.application,
            facts.client_ip,
            facts.search_path,
            facts.search_path_known,
            (facts.purpose, facts.purpose_known) if self._purpose else None,
            when,
            self.rules.version,
            self.catalog.version,
        )

    def _context(
        self, facts: SessionFacts, enforce_only: bool, params: tuple[int, ...] | None = None
    ) -> Context:
        return Context.build(
            self.rules,
            self.catalog,
            facts,
            enforce_only=enforce_only,
            user_functions=self._user_functions,
            subject_columns=self._subject_columns,
            params=params,
        )

    def _decide(
        self,
        sql: str,
        facts: SessionFacts,
        extended: bool,
        pieces: list[Piece] | None = None,
        params: tuple[int, ...] | None = None,
    ) -> Decision:
        ctx = self._context(facts, enforce_only=True, params=params)
        actual = self._run(sql, ctx, extended, pieces)
        if not self._dry:
            return actual
        full = self._context(facts, enforce_only=False, params=params)
        differs = (full.table_rules, full.function_rules) != (ctx.table_rules, ctx.function_rules)
        would = self._run(sql, full, extended) if differs else actual
        if self.rules.defaults.mode == "dry_run":
            actual = Decision("allow", sql, None, (), "", False, None, would.statements)
        if would.action == actual.action and would.sql == actual.sql:
            return actual
        rules = tuple(dict.fromkeys([*would.rules, *actual.rules]))
        reason = f"dry run: would {would.action}" + (f": {would.reason}" if would.reason else "")
        return Decision(
            actual.action,
            actual.sql,
            actual.error,
            rules,
            reason,
            True,
            would.action,
            would.statements,
        )

    def _run(
        self, sql: str, ctx: Context, extended: bool, pieces: list[Piece] | None = None
    ) -> Decision:
        if len(sql) > MAX_SQL:
            # Deciding is linear but runs on the event loop; a megabytes-long text is
            # treated like any statement the engine cannot afford to understand.
            return self._unsplittable(sql, ctx, f"statement text over {MAX_SQL} characters")
        try:
            pieces = split(sql) if pieces is None else pieces
        except SplitError as e:
            return self._unsplittable(sql, ctx, str(e))
        if extended and len(pieces) > 1:
            # PostgreSQL's own answer to a Parse holding two statements.
            err = SyntaxProblem("cannot insert multiple commands into a prepared statement")
            return Decision("block", sql, err, (), err.message, False, None, ())
        verdicts = []
        path = PathInString(ctx.facts.search_path_known)
        purpose = PurposeInString.start(ctx, self.rules)
        for p in pieces:
            v = decide(p, ctx, self.masker, extended=extended)
            verdicts.append(v)
            if ctx.has_policy:
                path.check(v)
            purpose.check(v, ctx)
            if v.action != "block":
                purpose.after(v)
                # Later statements of the same string resolve names under the new path.
                new = path.after(v)
                if new is not None:
                    ctx = ctx.with_search_path(new)
        infos = tuple(_info(v) for v in verdicts)
        blocked = next((v for v in verdicts if v.action == "block"), None)
        rules = tuple(dict.fromkeys(r for v in verdicts for r in v.rules))
        if blocked is not None:
            first = tuple(dict.fromkeys([*blocked.rules, *rules]))
            return Decision("block", sql, blocked.error, first, blocked.reason, False, None, infos)
        if any(v.action == "rewrite" for v in verdicts):
            text = "; ".join(v.sql for v in verdicts)
            reason = "; ".join(dict.fromkeys(v.reason for v in verdicts if v.reason))
            return Decision("rewrite", text, None, rules, reason, False, None, infos)
        reason = "; ".join(dict.fromkeys(v.reason for v in verdicts if v.reason))
        return Decision("allow", sql, None, rules, reason, False, None, infos)

    def _unsplittable(self, sql: str, ctx: Context, why: str) -> Decision:
        # A user no rule applies to, allowed every kind, has nothing to police: the
        # server answers the text (usually with its own syntax error).
        unpoliced = not ctx.has_policy and ctx.defaults.allows_kind("unknown")
        if ctx.defaults.unparsed == "allow" or unpoliced:
            return Decision("allow", sql, None, (), f"not understood: {why}", False, None, ())
        err = NotUnderstood(why)
        return Decision("block", sql, err, (), why, False, None, ())
