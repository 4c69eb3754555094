"""The production hooks: policy engine, then extraction guard, behind the session's seam.

`Enforcer.decide` asks the pure policy engine first (cached, microseconds
when warm); a statement it lets through then goes to the guard, which may
refuse it (budgets, detectors), delay it (throttle) or cap its result
stream. In the extended protocol the guard's part runs at every Execute
instead (`execute`), so each run of a prepared statement is counted, delayed
and capped like a new statement. Rules and catalog swap atomically on reload;
guard budgets live in its store and survive.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from proxy.catalog import Catalog
from proxy.errors import Blocked, StalePlan
from proxy.guard import Guard
from proxy.hooks import Admission, Hooks, StatementResult
from proxy.identity import SessionFacts
from proxy.policy.engine import Decision, PolicyEngine, StatementInfo
from proxy.rules import RuleSet

log = logging.getLogger("oversight.enforce")

_INFO_FIELDS = ("kind", "tables", "columns", "fingerprint", "redacted")


def _upstream_sql(adm: Admission, token: _Token) -> str:
    return adm.sql if adm.sql is not None else token.sql


def _info(s: StatementInfo) -> dict[str, Any]:
    d = {k: getattr(s, k) for k in _INFO_FIELDS}
    d["tables"] = list(d["tables"])
    d["columns"] = list(d["columns"])
    if s.search_path is not None:
        d["search_path"] = list(s.search_path)
    return d


@dataclasses.dataclass(slots=True)
class _Token:
    decision: Decision
    guard: Any
    sql: str = ""  # the text the client sent (extended protocol: for revalidation)
    engine: PolicyEngine | None = None  # the rules it was decided under


class Enforcer(Hooks):
    def __init__(
        self,
        rules: RuleSet,
        catalog: Catalog,
        guard: Guard | None,
        *,
        hash_salt: str | None = None,
        on_ddl: Callable[[], None] | None = None,
    ) -> None:
        self.rules = rules
        self.catalog = catalog
        self.guard = guard
        self.hash_salt = hash_salt
        self.engine = PolicyEngine(rules, catalog, hash_salt=hash_salt)
        self.on_ddl = on_ddl

    def reload(self, rules: RuleSet | None = None, catalog: Catalog | None = None) -> None:
        """Swap rules and/or catalog; the next statement sees the new set."""
        self.rules = rules or self.rules
        self.catalog = catalog or self.catalog
        self.engine = PolicyEngine(self.rules, self.catalog, hash_salt=self.hash_salt)
        if self.guard is not None:
            self.guard.update(self.rules, self.catalog)

    async def decide(self, sql: str, facts: SessionFacts, *, extended: bool) -> Admission:
        d = self.engine.decide(sql, facts, extended=extended)
        who = self.rules.principal(facts)
        audit: dict[str, Any] = {"groups": sorted(who.groups)}
        if d.dry_run:
            audit["dry_run"] = True
            audit["would"] = d.would
        statements = [_info(s) for s in d.statements]
        if d.action == "block":
            return Admission(
                action="block",
                error=d.error,
                rules=d.rules,
                reason=d.reason,
                statements=statements,
                audit=audit,
                token=_Token(d, None, sql, self.engine),
            )
        adm = Admission(
            action=d.action,
            sql=d.sql if d.action == "rewrite" else None,
            rules=d.rules,
            reason=d.reason,
            statements=statements,
            audit=audit,
            token=_Token(d, None, sql, self.engine),
        )
        if extended:
            # A prepared statement may run many times, under rules reloaded
            # since its Parse: each execution is checked again (`execute`).
            adm.per_execute = True
            return adm
        if self.guard is None:
            return adm
        return await self._guard(adm, facts, d.statements)

    async def execute(
        self, facts: SessionFacts, statement: Admission, params: tuple[str, ...]
    ) -> Admission:
        """One execution of a statement admitted at Parse.

        If the rules were reloaded since the Parse, the statement is decided
        again: refused if the new rules refuse it, and refused as a stale
        plan if they would rewrite it differently, since the upstream holds
        the old rewrite. Then the guard's part, per run: bound values join
        the statement's literals, so the lookup and paging detectors see
        `WHERE id = $1` the way they see `WHERE id = 42`.
        """
        token = statement.token
        if not isinstance(token, _Token):
            return statement
        if token.engine is not self.engine:
            fresh = await self.decide(token.sql, facts, extended=True)
            changed = _upstream_sql(fresh, token) != _upstream_sql(statement, token)
            if fresh.error is None and changed:
                err = StalePlan()
                fresh = dataclasses.replace(
                    fresh, action="block", error=err, rules=("reload",), reason=str(err.detail)
                )
            if fresh.error is not None:
                return fresh
            statement, token = fresh, fresh.token
            assert isinstance(token, _Token)
        if self.guard is None or not self.guard.specs_for(facts):
            return statement
        infos = token.decision.statements
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
        r = self.rules
        if r.matching_rules(facts) or r.matching_functions(facts) or r.matching_extraction(facts):
            err = Blocked("fastpath", f"function call by OID {oid} bypasses SQL policy")
            return Admission(action="block", error=err, reason=err.reason)
        return Admission()

    async def throttle(self, facts: SessionFacts, token: Any, rows: int, nbytes: int) -> float:
        if self.guard is None or not isinstance(token, _Token) or token.guard is None:
            return 0.0
        return await self.guard.pace(facts, token.guard, rows, nbytes)

    async def finished(self, facts: SessionFacts, token: Any, result: StatementResult) -> None:
        if not isinstance(token, _Token):
            return
        if self.guard is not None and token.guard is not None:
            await self.guard.finished(facts, token.guard, result)
        if (
            result.error is None
            and self.on_ddl is not None
            and any(s.ddl for s in token.decision.statements)
        ):
            self.on_ddl()
