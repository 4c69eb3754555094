"""Alert bodies: plain JSON, OCSF Detection Finding (class 2004) and CEF, plus syslog framing.

CEF (ArcSight Common Event Format, rev. 25): `CEF:0|vendor|product|version|
signature|name|severity|extension`. In the header `\\` and `|` are escaped with
a backslash; in extension values `\\` and `=` are, and line breaks become `\\n`
/ `\\r`. Header fields cannot hold a line break at all, so one becomes a space.

Syslog over TLS uses RFC 5425 framing (octet counting: `LEN SP MSG`, the
framing RFC 5425 requires and rsyslog, syslog-ng and SIEM collectors read) and
an RFC 5424 header, facility 13 (log audit), severity warning.
"""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime
from typing import Any

import orjson

from proxy.alerts.alert import Alert

VENDOR = "Oversight"
PRODUCT = "Oversight"
VERSION = "1"
OCSF_VERSION = "1.3.0"
CEF_SEVERITY = {"block": 8, "cutoff": 7, "throttle": 5}
_PRI = 13 * 8 + 4  # facility log audit, severity warning


def to_json(alert: Alert) -> bytes:
    return orjson.dumps({"source": "oversight", **alert.fields()})


def _epoch_ms(ts: str) -> int:
    try:
        when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _title(alert: Alert) -> str:
    if alert.trigger == "detector" and alert.detectors:
        return f"{', '.join(alert.detectors)} detected for {alert.user}"
    if alert.trigger == "canary":
        return f"canary {alert.rule} touched by {alert.user}"
    return f"statement {alert.decision} for {alert.user} ({alert.rule})"


def to_ocsf(alert: Alert) -> bytes:
    """An OCSF Detection Finding: class 2004, category 2 (Findings), activity 1 (Create)."""
    refused = alert.decision in ("block", "cutoff")
    body: dict[str, Any] = {
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "time": _epoch_ms(alert.ts),
        "severity_id": 4 if refused else 3,  # High / Medium
        "severity": "High" if refused else "Medium",
        "status_id": 1,
        "status": "New",
        "action_id": 2 if refused else 1,  # Denied / Allowed
        "disposition_id": 2 if refused else 17,  # Blocked / Logged
        "count": alert.count,
        "message": alert.reason or _title(alert),
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": PRODUCT, "vendor_name": VENDOR},
            "uid": alert.uid,
        },
        "finding_info": {
            "uid": alert.uid,
            "title": _title(alert),
            "types": [alert.trigger, *alert.detectors],
            "analytic": {"name": alert.rule, "type_id": 1, "type": "Rule"},
        },
        "actor": {"user": {"name": alert.user}, "session": {"uid": alert.session}},
        "src_endpoint": {"ip": _ip(alert.client)},
        "unmapped": {
            "rule": alert.rule,
            "rules": list(alert.rules),
            "decision": alert.decision,
            "fingerprint": alert.fingerprint,
            "purpose": alert.purpose,
            "database": alert.database,
            "application": alert.application,
            "sql": alert.sql,
        },
    }
    return orjson.dumps(body)


def _ip(client: str) -> str:
    return client.rsplit(":", 1)[0].strip("[]") if ":" in client else client


def cef_header(value: str) -> str:
    return re.sub(r"[\r\n]+", " ", value.replace("\\", "\\\\").replace("|", "\\|"))


def cef_value(value: str) -> str:
    out = value.replace("\\", "\\\\").replace("=", "\\=")
    return out.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def to_cef(alert: Alert) -> str:
    ext = {
        "rt": str(_epoch_ms(alert.ts)),
        "suser": alert.user,
        "src": _ip(alert.client),
        "act": alert.decision,
        "cnt": str(alert.count),
        "msg": alert.reason,
        "cs1Label": "rule",
        "cs1": alert.rule,
        "cs2Label": "fingerprint",
        "cs2": alert.fingerprint or "",
        "cs3Label": "purpose",
        "cs3": alert.purpose or "",
        "cs4Label": "detectors",
        "cs4": ",".join(alert.detectors),
        "cs5Label": "sql",
        "cs5": alert.sql,
        "externalId": alert.uid,
    }
    head = [
        "CEF:0",
        cef_header(VENDOR),
        cef_header(PRODUCT),
        cef_header(VERSION),
        cef_header(f"{alert.trigger}:{alert.decision}"),
        cef_header(_title(alert)),
        str(CEF_SEVERITY.get(alert.decision, 5)),
    ]
    return "|".join(head) + "|" + " ".join(f"{k}={cef_value(v)}" for k, v in ext.items())


def syslog_frame(message: str, now: datetime | None = None, host: str | None = None) -> bytes:
    """One RFC 5424 message in RFC 5425 octet-counting framing."""
    when = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds")
    hostname = (host or socket.gethostname() or "-").replace(" ", "_")[:255]
    line = f"<{_PRI}>1 {when.replace('+00:00', 'Z')} {hostname} oversight - alert - {message}"
    data = line.encode("utf-8", "backslashreplace")
    return b"%d %s" % (len(data), data)


def render(alert: Alert, fmt: str) -> bytes:
    if fmt == "ocsf":
        return to_ocsf(alert)
    if fmt == "cef":
        return to_cef(alert).encode("utf-8", "backslashreplace")
    return to_json(alert)
