"""The production hooks: policy engine, then extraction guard, behind the session's seam.

`Enforcer.decide` asks the pure policy engine first (cached, microseconds
when warm); a statement it lets through then goes to the guard, which may
refuse it (budgets, detectors), delay it (throttle) or cap its result
stream. In the extended protocol the guard's part runs at every Execute
instead (`execute`), so each run of a prepared statement is counted, delayed
and capped like a new statement; so does every run of a statement prepared
or a cursor declared in SQL (EXECUTE, FETCH, or a protocol Bind or Execute
naming it): PREPARE and DECLARE themselves return no rows and are admitted
by policy alone, and their runs are left out of the statement string's own
admission. Rules and catalog swap atomically on reload; guard budgets live
in its store and survive.

Catalogs are per database (`CatalogSet`): a statement is decided against the
snapshot of the session's own database, loaded on its first session. A user
with any policy is refused while that snapshot cannot be loaded (users with
none are let through, audited, since no rule of theirs depends on it). When
a decision names relations the snapshot does not know, the database's
catalog is refreshed (coalesced, rate-limited) and the statement decided
again, so a view or partition created since the last load is governed at
its first use.

The subject ledger's `looked_up` (docs/ledger.md): the values a statement
compared with subject columns (policy/lookups.py) are hashed here, literals
when it is decided, bound values (Bind, EXECUTE arguments) at each run, and
handed to the recorder on the admission. A session a blocking canary tripped
(proxy/ledger/canaries.py) has every later statement refused.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from proxy.catalog import Catalog
from proxy.catalogs import CatalogSet
from proxy.errors import (
    Blocked,
    CatalogUnavailable,
    ProxyError,
    StaleCursor,
    StalePlan,
    UnknownName,
)
from proxy.guard import Guard
from proxy.hooks import Admission, Effect, Hooks, StatementResult, Unknown
from proxy.identity import SessionFacts
from proxy.ledger.canaries import Tripwire
from proxy.ledger.hashing import DEFAULT_KEY, subject_hash
from proxy.plumbing import effects, run_kind
from proxy.policy.engine import Decision, PolicyEngine, StatementInfo
from proxy.policy.lookups import values
from proxy.rules import RuleSet

log = logging.getLogger("oversight.enforce")

_INFO_FIELDS = ("kind", "tables", "columns", "fingerprint", "redacted")


def _upstream_sql(adm: Admission, token: _Token) -> str:
    return adm.sql if adm.sql is not None else token.sql


def _stale(token: _Token) -> ProxyError:
    """The error for a run whose upstream text the reloaded rules would change."""
    infos = token.decision.statements
    if infos and infos[0].kind == "declare":
        effect = effects(token.sql, infos).get(0)
        return StaleCursor(effect.name or "?" if effect else "?")
    return StalePlan()


def _info(s: StatementInfo) -> dict[str, Any]:
    d = {k: getattr(s, k) for k in _INFO_FIELDS}
    d["tables"] = list(d["tables"])
    d["columns"] = list(d["columns"])
    if s.search_path is not None:
        d["search_path"] = list(s.search_path)
    if s.change is not None:  # shown in the record's detail; the session reads Admission.changes
        c = s.change
        d["change"] = {"op": c.op, "name": c.name, "value": list(c.value) if c.value else c.value}
    return d


@dataclasses.dataclass(slots=True)
class _Token:
    decision: Decision
    guard: Any
    sql: str = ""  # the text the client sent (extended protocol: for revalidation)
    engine: PolicyEngine | None = None  # the rules it was decided under
    param_types: tuple[int, ...] | None = None  # its Parse's (revalidation decides alike)


class Enforcer(Hooks):
    def __init__(
        self,
        rules: RuleSet,
        catalog: Catalog,
        guard: Guard | None,
        *,
        hash_salt: str | None = None,
        on_ddl: Callable[[str], None] | None = None,
        catalogs: CatalogSet | None = None,
        ledger_key: bytes = DEFAULT_KEY,
        tripwire: Tripwire | None = None,
    ) -> None:
        """`catalogs`: per-database snapshots; without it `catalog` serves every database.
        `ledger_key` hashes searched-for values; `tripwire` holds the sessions a blocking
        canary tripped (the recorder trips it)."""
        self.ledger_key = ledger_key
        self.tripwire = tripwire
        self.rules = rules
        self.catalog = catalog
        self.guard = guard
        self.hash_salt = hash_salt
        self.engine = PolicyEngine(rules, catalog, hash_salt=hash_salt)
        self.on_ddl = on_ddl
        self.catalogs = catalogs
        self._engines: dict[str, PolicyEngine] = {}
        self._blind = PolicyEngine(rules, Catalog(), hash_salt=hash_salt)  # no snapshot yet

    def reload(self, rules: RuleSet | None = None, catalog: Catalog | None = None) -> None:
        """Swap rules and/or catalog; the next statement sees the new set."""
        self.rules = rules or self.rules
        self.catalog = catalog or self.catalog
        self.engine = PolicyEngine(self.rules, self.catalog, hash_salt=self.hash_salt)
        self._engines.clear()
        self._blind = PolicyEngine(self.rules, Catalog(), hash_salt=self.hash_salt)
        if self.guard is not None:
            self.guard.update(self.rules, self.catalog)

    def engine_for(self, database: str) -> PolicyEngine | None:
        """The engine for the database's current snapshot; None if it never loaded."""
        if self.catalogs is None:
            return self.engine
        cat = self.catalogs.get(database)
        if cat is None:
            return None
        eng = self._engines.get(database)
        if eng is None or eng.catalog is not cat or eng.rules is not self.rules:
            eng = self._engines[database] = PolicyEngine(self.rules, cat, hash_salt=self.hash_salt)
            if database == self.catalogs.default and cat is not self.catalog:
                self.catalog, self.engine = cat, eng
                if self.guard is not None:
                    self.guard.update(self.rules, cat)
        return eng

    async def _decision(
        self,
        sql: str,
        facts: SessionFacts,
        extended: bool,
        audit: dict[str, Any],
        params: tuple[int, ...] | None = None,
    ) -> tuple[Decision, PolicyEngine]:
        db = facts.database
        engine = self.engine_for(db)
        if engine is None and self.catalogs is not None:
            await self.catalogs.ensure(db)
            engine = self.engine_for(db)
        if engine is None:
            assert self.catalogs is not None
            if self._has_policy(facts):
                err = CatalogUnavailable(db, self.catalogs.failure(db) or "not loaded yet")
                return Decision("block", sql, err, (), err.message, False, None, ()), self._blind
            audit["catalog"] = "unavailable"
            d = self._blind.decide(sql, facts, extended=extended, param_types=params)
            return d, self._blind
        d = engine.decide(sql, facts, extended=extended, param_types=params)
        unknown = [u for s in d.statements for u in s.unknown]
        if unknown and self.catalogs is not None and self._has_policy(facts):
            # Something created since the last load (a view, a partition): load again.
            await self.catalogs.refresh(db, miss=True)
            audit["catalog_refresh"] = sorted(set(unknown))
            fresh = self.engine_for(db)
            if fresh is not None and fresh is not engine:
                engine = fresh
                d = fresh.decide(sql, facts, extended=extended, param_types=params)
        return d, engine

    async def decide(
        self,
        sql: str,
        facts: SessionFacts,
        *,
        extended: bool,
        param_types: tuple[int, ...] | None = None,
    ) -> Admission:
        adm = await self._decide(sql, facts, extended, param_types)
        if isinstance(adm.token, _Token):
            adm.looked_up = self.looked_up(adm.token.decision.statements, None)
        return self._tripped(adm, facts)

    def looked_up(
        self, statements: Sequence[StatementInfo], params: tuple[str, ...] | None
    ) -> dict[int, tuple[tuple[str, str, str], ...]]:
        """By statement index, (subject, column, hash) of each value it searched for;
        bound values only once `params` are known."""
        out = {}
        key = self.ledger_key
        for i, s in enumerate(statements):
            if not s.lookups:
                continue
            found = values(s.lookups, s.literals, params)
            if found:
                out[i] = tuple(
                    (
                        x.subject,
                        x.column,
                        subject_hash(key, x.subject, v, "" if x.key else x.column),
                    )
                    for x, v in found
                )
        return out

    def _tripped(self, adm: Admission, facts: SessionFacts) -> Admission:
        """Refuse everything once a blocking canary tripped the session."""
        canary = self.tripwire.tripped(facts.session_id) if self.tripwire else None
        if canary is None:
            return adm
        err = Blocked(canary, "this session touched a canary record")
        return dataclasses.replace(
            adm,
            action="block",
            sql=None,
            error=err,
            rules=(canary,),
            reason=err.reason,
            limits=None,
            delay=0.0,
            per_execute=False,
        )

    async def _decide(
        self, sql: str, facts: SessionFacts, extended: bool, param_types: tuple[int, ...] | None
    ) -> Admission:
        who = self.rules.principal(facts)
        audit: dict[str, Any] = {"groups": sorted(who.groups)}
        d, engine = await self._decision(sql, facts, extended, audit, param_types)
        token = _Token(d, None, sql, engine, param_types)
        if d.dry_run:
            audit["dry_run"] = True
            audit["would"] = d.would
        statements = [_info(s) for s in d.statements]
        changes = {i: s.change for i, s in enumerate(d.statements) if s.change is not None}
        if d.action == "block":
            return Admission(
                action="block",
                error=d.error,
                rules=d.rules,
                reason=d.reason,
                statements=statements,
                changes=changes,
                audit=audit,
                token=token,
            )
        adm = Admission(
            action=d.action,
            sql=d.sql if d.action == "rewrite" else None,
            rules=d.rules,
            reason=d.reason,
            statements=statements,
            changes=changes,
            audit=audit,
            token=token,
        )
        for i, effect in effects(sql, d.statements).items():
            adm.effects[i] = self._effect(effect, d, i, audit, token)
        if extended:
            # A prepared statement may run many times, under rules reloaded
            # since its Parse: each execution is checked again (`execute`).
            adm.per_execute = True
            return adm
        # PREPARE and DECLARE return no rows; EXECUTE and FETCH are admitted as
        # runs of what they name (`execute`), so none of them is counted here.
        infos = [s for i, s in enumerate(d.statements) if i not in adm.effects]
        if self.guard is None or (d.statements and not infos):
            return adm
        return await self._guard(adm, facts, infos)

    def _effect(
        self, effect: Effect, d: Decision, index: int, audit: dict[str, Any], outer: _Token
    ) -> Effect:
        """A PREPARE or DECLARE carries what each of its runs is first admitted as."""
        if effect.op not in ("prepare", "declare"):
            return effect
        info = d.statements[index]
        text = effect.text
        alone = dataclasses.replace(d, sql=info.rewritten or text, statements=(info,))
        sub = Admission(
            action="rewrite" if info.rewritten is not None else "allow",
            sql=info.rewritten,
            rules=d.rules,
            reason=d.reason,
            statements=[_info(info)],
            changes={0: info.change} if info.change is not None else {},
            audit=dict(audit),
            token=_Token(alone, None, text, outer.engine, outer.param_types),
            per_execute=True,
        )
        return dataclasses.replace(effect, admission=sub)

    def _has_policy(self, facts: SessionFacts) -> bool:
        r = self.rules
        return bool(
            r.matching_rules(facts) or r.matching_functions(facts) or r.matching_extraction(facts)
        )

    async def execute(
        self, facts: SessionFacts, statement: Admission, params: tuple[str, ...]
    ) -> Admission:
        """One run (`_execute`), with the values it searched for hashed from its own
        bound values: a copy, since the statement's admission serves every run."""
        adm = await self._execute(facts, statement, params)
        token = adm.token
        if isinstance(token, _Token) and any(s.lookups for s in token.decision.statements):
            looked = self.looked_up(token.decision.statements, params)
            if looked != adm.looked_up:
                adm = dataclasses.replace(adm, looked_up=looked)
        return self._tripped(adm, facts)

    async def _execute(
        self, facts: SessionFacts, statement: Admission, params: tuple[str, ...]
    ) -> Admission:
        """One run of a statement admitted at Parse or PREPARE, or of a DECLAREd cursor.

        If the rules were reloaded since, the statement is decided again:
        refused if the new rules refuse it, and refused as a stale plan (or
        cursor) if they would rewrite it differently, since the upstream holds
        the old rewrite. Then the guard's part, per run: bound values join
        the statement's literals, so the lookup and paging detectors see
        `WHERE id = $1` the way they see `WHERE id = 42`. A cursor's later
        FETCHes go on under its first run's admission (one query, one cap).
        A name the session never saw created is refused to users with a policy.
        """
        token = statement.token
        if isinstance(token, Unknown):
            if not self._has_policy(facts):
                return statement
            err: ProxyError = UnknownName(token.name, cursor=token.cursor)
            return dataclasses.replace(statement, action="block", error=err, reason=err.message)
        if not isinstance(token, _Token):
            return statement
        # Running PREPARE or DECLARE itself returns no rows: only the rules are asked.
        defines = any(e.op != "run" for e in statement.effects.values())
        current = self.engine_for(facts.database) or self._blind
        # Rules that read the purpose: it may have changed since the Parse (proxy/purpose.py).
        if token.engine is not current or current.rules.uses_purpose:
            fresh = await self.decide(
                token.sql, facts, extended=True, param_types=token.param_types
            )
            changed = _upstream_sql(fresh, token) != _upstream_sql(statement, token)
            if fresh.error is None and changed:
                err = _stale(token)
                why = err.detail or err.message
                fresh = dataclasses.replace(
                    fresh, action="block", error=err, rules=("reload",), reason=why
                )
            if fresh.error is not None:
                return fresh
            statement, token = fresh, fresh.token
            assert isinstance(token, _Token)
        elif not statement.per_execute:
            return statement  # a cursor's later FETCH: its run goes on under this admission
        if defines or self.guard is None or not self.guard.specs_for(facts):
            return statement
        infos = tuple(
            dataclasses.replace(s, kind=run_kind(s.kind, s.redacted))
            for s in token.decision.statements
        )
        if params:
            infos = tuple(dataclasses.replace(s, literals=(*s.literals, *params)) for s in infos)
        adm = dataclasses.replace(statement, audit=dict(statement.audit), per_execute=False)
        return await self._guard(adm, facts, infos)

    async def _guard(
        self, adm: Admission, facts: SessionFacts, infos: Sequence[StatementInfo]
    ) -> Admission:
        assert self.guard is not None and isinstance(adm.token, _Token)
        g = await self.guard.admit(facts, infos)
        adm.token = dataclasses.replace(adm.token, guard=g.token)
        adm.rules = tuple(dict.fromkeys((*adm.rules, *g.rules)))
        if g.hits:
            adm.audit["detectors"] = g.hits
        if g.error is not None:
            adm.action = "block"
            adm.error = g.error
            adm.reason = g.error.message
            return adm
        adm.limits = g.limits
        adm.delay = g.delay
        # An armed pacer is not yet a throttle: the record says "throttle" only
        # when the statement was actually delayed or slowed (see Recorder).
        if g.delay > 0:
            adm.action = "throttle"
        return adm

    async def function_call(self, facts: SessionFacts, oid: int) -> Admission:
        """Fast-path calls bypass SQL policy, so users with any policy may not make them."""
        if self._has_policy(facts):
            err = Blocked("fastpath", f"function call by OID {oid} bypasses SQL policy")
            return Admission(action="block", error=err, reason=err.reason)
        return self._tripped(Admission(), facts)

    async def throttle(self, facts: SessionFacts, token: Any, rows: int, nbytes: int) -> float:
        if self.guard is None or not isinstance(token, _Token) or token.guard is None:
            return 0.0
        return await self.guard.pace(facts, token.guard, rows, nbytes)

    async def finished(
        self, facts: SessionFacts, token: Any, result: StatementResult
    ) -> Sequence[dict[str, Any]]:
        if not isinstance(token, _Token):
            return ()
        hits: Sequence[dict[str, Any]] = ()
        if self.guard is not None and token.guard is not None:
            hits = await self.guard.finished(facts, token.guard, result)
        if (
            result.error is None
            and self.on_ddl is not None
            and any(s.ddl for s in token.decision.statements)
        ):
            self.on_ddl(facts.database)
        return hits
