"""Alerts (DESIGN.md, "Rule files": `alerts:`): tell someone while it happens.

`alert` turns a finished statement record into alerts for the destinations
whose `when` it fits; `suppress` holds the per-destination windows; `formats`
writes JSON, OCSF Detection Finding (2004) and CEF; `sinks` deliver them
(webhook over httpx, syslog over TCP/TLS); `alerter` puts it together with a
bounded queue per destination, so delivery never delays a statement; `stats`
counts what was sent, suppressed, failed and dropped for /metrics.
"""

from __future__ import annotations

from proxy.alerts.alert import Alert, alerts_for, sample_alert
from proxy.alerts.alerter import Alerter
from proxy.alerts.stats import AlertStats

__all__ = ["Alert", "AlertStats", "Alerter", "alerts_for", "sample_alert"]
