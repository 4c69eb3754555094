"""Alerts without a network: routing, CEF escaping, OCSF shape, suppression, queue bounds."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from alertreceivers import cef_extension

from proxy.alerts import Alert, Alerter, AlertStats, alerts_for
from proxy.alerts.formats import cef_header, cef_value, syslog_frame, to_cef, to_ocsf
from proxy.alerts.sinks import DeliveryError, Sink
from proxy.alerts.suppress import Suppressor
from proxy.rules import AlertRoute, RulesError, load_rules
from proxy.statement import StatementRecord


def record(decision: str = "block", user: str = "alice", **extra: Any) -> StatementRecord:
    return StatementRecord(
        ts="2026-12-04T17:00:00.000000Z",
        session="s1",
        user=user,
        groups=[],
        client="10.0.0.5:5555",
        application="psql",
        database="app",
        sql="COPY people TO STDOUT",
        fingerprint="abc123",
        kind="copy",
        tables=["public.people"],
        columns=[],
        decision=decision,
        rules=["no-copy"],
        reason="oversight: copy is not allowed",
        rewritten=None,
        rows=0,
        bytes=0,
        duration_ms=0.1,
        error=None,
        extra=extra,
    )


def route(**kw: Any) -> AlertRoute:
    base: dict[str, Any] = {"id": "soc", "when": {"decisions": ["block"]}, "webhook": "http://x/"}
    return AlertRoute.model_validate({**base, **kw})


def alert(user: str = "alice", rule: str = "r1") -> Alert:
    return Alert(
        ts="t",
        trigger="decision",
        decision="block",
        rule=rule,
        user=user,
        fingerprint="f",
        purpose=None,
    )


# -- routing ---------------------------------------------------------------------------


def test_a_refusal_fits_its_decision_and_names_user_rule_fingerprint_purpose() -> None:
    a = alerts_for(record(), route())
    assert a is not None
    assert (a.user, a.rule, a.fingerprint, a.purpose) == ("alice", "no-copy", "abc123", None)
    assert alerts_for(record("allow"), route()) is None


def test_purpose_is_read_from_the_record_when_it_has_one() -> None:
    a = alerts_for(record(purpose="case 42"), route())
    assert a is not None and a.purpose == "case 42"


def test_a_detector_hit_fits_a_detectors_route_even_when_allowed() -> None:
    hit = {"rule": "scrape", "detector": "paging_scan", "action": "log"}
    r = route(when={"detectors": ["paging_scan"]})
    a = alerts_for(record("allow", detectors=[hit]), r)
    assert a is not None and a.trigger == "detector" and a.rule == "scrape"
    assert a.detectors == ("paging_scan",)
    other = route(when={"detectors": ["copy_out"]})
    assert alerts_for(record("allow", detectors=[hit]), other) is None


# -- rule files ------------------------------------------------------------------------


def test_rule_file_mistakes_name_file_alert_and_field(tmp_path: Any) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(
        "version: 1\nalerts:\n"
        "  - {id: a, when: {decisions: [block]}, webhook: 'ftp://x'}\n"
        "  - {id: b, when: {decisions: [block]}, syslog: 'tcp+tls://h:6514',"
        " suppress: 10 parsecs}\n"
        "  - {id: c, when: {decisions: [block]}, webhook: 'https://h/', format: cef}\n"
        "  - {id: d, when: {decisions: [block]}, syslog: 'udp://h:514'}\n"
        "  - {id: e, when: {decisions: [nope]}, webhook: 'https://h/'}\n"
        "  - {id: f, when: {}, webhook: 'https://h/'}\n"
        "  - {id: dup, when: {canaries: true}, webhook: 'https://h/'}\n"
        "  - {id: dup, when: {canaries: true}, webhook: 'https://h/'}\n"
    )
    with pytest.raises(RulesError) as e:
        load_rules(f)
    text = "\n".join(e.value.problems)
    assert f"{f}: alert a: " in text and "bad URL 'ftp://x'" in text
    assert f"{f}: alert b: suppress: bad duration" in text
    assert f"{f}: alert c: " in text and "a webhook sends json or ocsf" in text
    assert f"{f}: alert d: " in text and "bad address 'udp://h:514'" in text
    assert f"{f}: alert e: when.decisions.0:" in text
    assert f"{f}: alert f: when: " in text and "name decisions, detectors or canaries" in text
    assert "alert dup: id: duplicate" in text


def test_a_valid_alerts_section_loads_with_canaries_accepted(tmp_path: Any) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(
        "version: 1\nalerts:\n"
        "  - id: soc\n"
        "    when: {decisions: [block, cutoff], detectors: [copy_out], canaries: true}\n"
        "    webhook: https://siem.example.org/x\n    format: ocsf\n    suppress: 10m\n"
        "  - {id: sys, when: {canaries: true}, syslog: 'tcp+tls://siem.example.org:6514'}\n"
    )
    rs = load_rules(f)
    assert [(r.id, r.kind, r.fmt, r.suppress) for r in rs.alerts] == [
        ("soc", "webhook", "ocsf", 600.0),
        ("sys", "syslog", "cef", 0.0),
    ]


# -- formats ---------------------------------------------------------------------------


def test_cef_header_escapes_pipe_and_backslash_and_flattens_newlines() -> None:
    assert cef_header("a|b\\c\nd") == "a\\|b\\\\c d"


def test_cef_extension_escapes_equals_backslash_and_newlines_but_not_pipe() -> None:
    assert cef_value("a=b\\c|d\r\ne") == "a\\=b\\\\c|d\\ne"


def test_cef_message_round_trips_hostile_values() -> None:
    hostile = Alert(
        ts="2026-12-04T17:00:00Z",
        trigger="decision",
        decision="block",
        rule="r|1=x",
        user="eve\\ = |admin",
        fingerprint="f",
        purpose="a\nb",
        sql="SELECT 'x=1 | y'",
    )
    msg = to_cef(hostile)
    assert msg.startswith("CEF:0|Oversight|Oversight|1|decision:block|")
    assert "\n" not in msg
    ext = cef_extension(msg)
    assert ext["suser"] == "eve\\ = |admin"
    assert ext["cs1"] == "r|1=x" and ext["cs3"] == "a\nb" and ext["cs5"] == "SELECT 'x=1 | y'"


def test_ocsf_detection_finding_has_the_required_attributes() -> None:
    body = orjson.loads(to_ocsf(alert().counted(3)))
    assert body["class_uid"] == 2004 and body["category_uid"] == 2
    assert body["activity_id"] == 1 and body["type_uid"] == 200401
    assert isinstance(body["time"], int) and body["severity_id"] in range(0, 7)
    assert body["metadata"]["product"]["name"] == "Oversight" and body["metadata"]["version"]
    assert body["finding_info"]["uid"] and body["finding_info"]["title"]
    assert body["count"] == 3 and body["actor"]["user"]["name"] == "alice"
    assert body["unmapped"]["rule"] == "r1" and "purpose" in body["unmapped"]


def test_syslog_frame_is_octet_counted() -> None:
    frame = syslog_frame("CEF:0|é", host="h")
    length, _, rest = frame.partition(b" ")
    assert int(length) == len(rest) and rest.startswith(b"<108>1 ")


# -- suppression -----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeats_within_the_window_are_counted_and_reported_once() -> None:
    clock = Clock()
    s = Suppressor(60, clock)
    assert s.offer(alert()) is not None
    assert all(s.offer(alert()) is None for _ in range(10))
    assert s.offer(alert(user="bob")) is not None  # another user: its own window
    assert s.offer(alert(rule="r2")) is not None  # another rule too
    assert s.due() == []
    clock.now = 61
    due = s.due()
    assert [a.count for a in due] == [10] and due[0].user == "alice"
    assert s.due() == []
    assert s.offer(alert()) is not None  # a fresh window


def test_a_repeat_after_a_closed_window_carries_the_count_if_not_yet_flushed() -> None:
    clock = Clock()
    s = Suppressor(60, clock)
    s.offer(alert())
    s.offer(alert())
    s.offer(alert())
    clock.now = 100
    sent = s.offer(alert())
    assert sent is not None and sent.count == 3


def test_no_window_sends_everything() -> None:
    s = Suppressor(0, Clock())
    assert all(s.offer(alert()) is not None for _ in range(5))


# -- the alerter -----------------------------------------------------------------------


class Stuck(Sink):
    """A receiver that never answers."""

    async def send(self, alert: Alert) -> str:
        await asyncio.Event().wait()
        raise AssertionError


class Refuses(Sink):
    async def send(self, alert: Alert) -> str:
        raise DeliveryError("HTTP 503")


async def test_a_stuck_receiver_fills_the_bounded_queue_and_drops_are_counted() -> None:
    events: list[dict[str, Any]] = []

    async def audit(e: dict[str, Any]) -> None:
        events.append(e)

    stats = AlertStats()
    r = route(queue=3, timeout=60)
    alerter = Alerter([r], audit_event=audit, stats=stats, sinks=Stuck)
    await alerter.start()
    try:
        for _ in range(10):
            alerter.observe(record())  # returns at once every time
        # observe() never yields, so the worker has not taken one yet: 3 queued, 7 dropped.
        assert stats.get("soc", "dropped") == 7
        await asyncio.sleep(0)
        for _ in range(100):
            if len([e for e in events if e["status"] == "dropped"]) == stats.get("soc", "dropped"):
                break
            await asyncio.sleep(0.01)
        dropped = [e for e in events if e["status"] == "dropped"]
        assert len(dropped) == stats.get("soc", "dropped")
        assert dropped[0]["event"] == "alert" and "queue full" in dropped[0]["detail"]
        assert dropped[0]["user"] == "alice" and dropped[0]["rule"] == "no-copy"
        assert stats.queued() == {"soc": 2}  # the third is with the stuck receiver
        assert stats.get("soc", "sent") == 0 and stats.get("soc", "failed") == 0
    finally:
        await alerter.stop()


async def test_a_refusing_receiver_counts_a_failure_after_the_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("proxy.alerts.alerter.BACKOFF_S", (0.0,))
    events: list[dict[str, Any]] = []

    async def audit(e: dict[str, Any]) -> None:
        events.append(e)

    stats = AlertStats()
    alerter = Alerter([route(retries=2)], audit_event=audit, stats=stats, sinks=Refuses)
    await alerter.start()
    try:
        alerter.observe(record())
        for _ in range(500):
            if events:
                break
            await asyncio.sleep(0.01)
        assert events[0]["status"] == "failed" and "HTTP 503 (3 attempts)" in events[0]["detail"]
        assert stats.get("soc", "failed") == 1 and stats.get("soc", "sent") == 0
    finally:
        await alerter.stop()


async def test_reload_swaps_routes_and_keeps_unchanged_ones() -> None:
    alerter = Alerter([route(), route(id="other")], sinks=Stuck)
    await alerter.start()
    try:
        kept = alerter.destinations[0]
        alerter.reload([route(), route(id="new", when={"decisions": ["cutoff"]})])
        assert [d.route.id for d in alerter.destinations] == ["soc", "new"]
        assert alerter.destinations[0] is kept
    finally:
        await alerter.stop()
