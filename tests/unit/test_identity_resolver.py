"""The identity resolver: merging, caching, and refusing when a source cannot answer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from proxy.identity import Identity, SessionFacts, from_source
from proxy.idsrc.resolver import IdentityResolver, IdentityUnavailable, Source
from proxy.rules import load_rules


class Counting:
    """A source answering from a dict and counting how often it was asked."""

    def __init__(self, name: str, groups: dict[str, set[str]], attrs: dict[str, str]) -> None:
        self.name, self.groups, self.attrs, self.calls = name, groups, attrs, 0

    async def lookup(self, user: str) -> Identity:
        self.calls += 1
        return from_source(self.name, frozenset(self.groups.get(user, set())), self.attrs)


async def test_sources_merge_groups_union_and_first_attribute_wins() -> None:
    a = Counting("roles", {"dave": {"analysts"}}, {})
    b = Counting("ldap", {"dave": {"emea", "analysts"}}, {"region": "north"})
    c = Counting("other", {}, {"region": "south"})
    r = IdentityResolver(
        [Source("roles", a.lookup), Source("ldap", b.lookup), Source("other", c.lookup)],
        ttl=60,
        timeout=5,
    )
    got = await r.resolve("dave")
    assert got.groups == {"analysts", "emea"}
    assert dict(got.attributes) == {"region": "north"}
    origin = dict(got.origin)
    assert origin["group:analysts"] == "roles"
    assert origin["group:emea"] == "ldap"
    assert origin["attr:region"] == "ldap"


async def test_answers_are_cached_for_the_ttl_then_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    src = Counting("roles", {"dave": {"analysts"}}, {})
    r = IdentityResolver([Source("roles", src.lookup)], ttl=60, timeout=5)
    await r.resolve("dave")
    clock[0] += 59
    await r.resolve("dave")
    assert src.calls == 1
    src.groups["dave"] = set()  # revoked upstream
    clock[0] += 2
    assert (await r.resolve("dave")).groups == frozenset()
    assert src.calls == 2


async def test_a_failing_source_refuses_and_is_not_cached() -> None:
    calls = 0

    async def broken(user: str) -> Identity:
        nonlocal calls
        calls += 1
        raise OSError("connection refused")

    r = IdentityResolver([Source("ldap", broken)], ttl=60, timeout=5)
    for _ in range(2):
        with pytest.raises(IdentityUnavailable, match="identity source ldap is unavailable") as e:
            await r.resolve("dave")
        assert e.value.sqlstate == "28000" and e.value.severity == "FATAL"
    assert calls == 2


async def test_a_slow_source_times_out_into_a_refusal() -> None:
    never = asyncio.Event()

    async def hangs(user: str) -> Identity:
        await never.wait()
        return Identity()

    r = IdentityResolver([Source("ldap", hangs)], ttl=60, timeout=0.05)
    with pytest.raises(IdentityUnavailable, match="did not answer"):
        await r.resolve("dave")


async def test_one_failing_source_refuses_even_when_another_answered() -> None:
    ok = Counting("roles", {"dave": {"analysts"}}, {})

    async def broken(user: str) -> Identity:
        raise ValueError("garbage")

    r = IdentityResolver([Source("roles", ok.lookup), Source("ldap", broken)], ttl=60, timeout=5)
    with pytest.raises(IdentityUnavailable):
        await r.resolve("dave")


async def test_concurrent_logins_of_one_user_share_one_lookup() -> None:
    gate = asyncio.Event()
    calls = 0

    async def slow(user: str) -> Identity:
        nonlocal calls
        calls += 1
        await gate.wait()
        return from_source("roles", frozenset({"analysts"}), {})

    r = IdentityResolver([Source("roles", slow)], ttl=60, timeout=5)
    tasks = [asyncio.create_task(r.resolve("dave")) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    got = await asyncio.gather(*tasks)
    assert calls == 1 and all(g.groups == {"analysts"} for g in got)


def test_principal_merges_sources_with_the_rule_files(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(
        "version: 1\nusers:\n  dave: {groups: [local], attributes: {region: west}}\nrules: []\n"
    )
    rs = load_rules(f)
    facts = SessionFacts(
        "dave",
        "db",
        groups=frozenset({"analysts"}),
        attributes=(("region", "north"), ("manager", "erin")),
    )
    who = rs.principal(facts)
    assert who.groups == {"local", "analysts"}
    assert who.attributes == {"region": "west", "manager": "erin"}  # the rule file wins
    stranger = rs.principal(SessionFacts("erin", "db", groups=frozenset({"analysts"})))
    assert stranger.groups == {"analysts"}
