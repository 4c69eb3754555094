"""The `alerts:` section: where refusals, cut-offs, detector hits and canary touches are sent.

Destinations are validated here (URL, syslog address, format); delivery lives
in proxy/alerts/.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from proxy.rules.model import DETECTORS, DetectorName, Duration, RuleModel

ALERT_DECISIONS = ("block", "cutoff", "throttle")
ALERT_DETECTORS = DETECTORS


class AlertWhen(RuleModel):
    """What an `alerts:` destination hears about; a statement fitting any key is sent.

    `canaries: true`: a statement that received or searched for a canary key.
    """

    decisions: list[Literal["block", "cutoff", "throttle"]] = Field(default_factory=list)
    detectors: list[DetectorName] = Field(default_factory=list)
    canaries: bool = False

    @model_validator(mode="after")
    def _check_something(self) -> AlertWhen:
        if not (self.decisions or self.detectors or self.canaries):
            raise ValueError("when: name decisions, detectors or canaries: true")
        return self


class AlertRoute(RuleModel):
    """One alert destination: a webhook (JSON or OCSF) or syslog over TCP/TLS (CEF)."""

    id: str
    description: str = ""
    when: AlertWhen
    webhook: str | None = None
    syslog: str | None = None
    format: Literal["json", "ocsf", "cef"] | None = None
    suppress: Duration = Field(default=0.0, ge=0)
    timeout: Duration = Field(default=5.0, gt=0)  # one delivery attempt
    retries: int = Field(default=3, ge=0, le=10)  # more attempts, with backoff
    queue: int = Field(default=1000, ge=1, le=100_000)  # waiting alerts; beyond: dropped
    ca: str | None = None  # PEM file of the CA to trust for https/tls (default: the system's)

    @model_validator(mode="after")
    def _check_destination(self) -> AlertRoute:
        if (self.webhook is None) == (self.syslog is None):
            raise ValueError("give exactly one of webhook (https://...) or syslog (tcp+tls://...)")
        if self.webhook is not None:
            if not re.fullmatch(r"https?://[^\s/?#]+(?:[/?#]\S*)?", self.webhook):
                raise ValueError(f"webhook: bad URL {self.webhook!r}; use https://host/path")
            if self.format not in (None, "json", "ocsf"):
                raise ValueError("format: a webhook sends json or ocsf")
        if self.syslog is not None:
            if not re.fullmatch(r"tcp(\+tls)?://[^\s:/]+:\d{1,5}", self.syslog):
                raise ValueError(f"syslog: bad address {self.syslog!r}; use tcp+tls://host:port")
            if int(self.syslog.rsplit(":", 1)[1]) > 65535:
                raise ValueError(f"syslog: bad port in {self.syslog!r}")
            if self.format not in (None, "cef"):
                raise ValueError("format: syslog sends cef")
        return self

    @property
    def kind(self) -> Literal["webhook", "syslog"]:
        return "webhook" if self.webhook is not None else "syslog"

    @property
    def fmt(self) -> str:
        return self.format or ("json" if self.webhook is not None else "cef")
