"""One rule file as written: every section's model (DESIGN.md, "Rule files (version 1)")."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from proxy.rules.alertroutes import AlertRoute
from proxy.rules.model import (
    Defaults,
    ExtractionRule,
    FunctionRule,
    RuleModel,
    RuleTest,
    TableRule,
    UserEntry,
)
from proxy.rules.subjects import CanaryRule, SubjectRule


class RuleFile(RuleModel):
    version: Literal[1]
    defaults: Defaults | None = None
    users: dict[str, UserEntry] = Field(default_factory=dict)
    rules: list[TableRule] = Field(default_factory=list)
    functions: list[FunctionRule] = Field(default_factory=list)
    extraction: list[ExtractionRule] = Field(default_factory=list)
    tests: list[RuleTest] = Field(default_factory=list)
    alerts: list[AlertRoute] = Field(default_factory=list)
    subjects: list[SubjectRule] = Field(default_factory=list)
    canaries: list[CanaryRule] = Field(default_factory=list)
