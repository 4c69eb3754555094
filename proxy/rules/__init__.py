"""Rule files (DESIGN.md, "Rule files (version 1)"): models, loading, merging, matching.

The package owns everything about the YAML a DBA writes and imports nothing
from proxy.policy: the policy engine and the guard read these models (imports
point down). `model` holds the pydantic models and their small parsers,
`subjects` and `alertroutes` the `subjects:`/`canaries:` and `alerts:`
sections, `filemodel` one file as written, `ruleset` the merged set, `load`
the loader and its problem reports, `sqlcheck` the static checks of SQL
snippets in filters and masks.
"""

from __future__ import annotations

from proxy.rules.alertroutes import AlertRoute, AlertWhen
from proxy.rules.filemodel import RuleFile
from proxy.rules.load import load_rules, static_problems
from proxy.rules.model import (
    ATTR_PARAM,
    DEFAULT_STATEMENTS,
    MASK_KINDS,
    ColumnPolicy,
    Defaults,
    Duration,
    ExtractionRule,
    FunctionRule,
    HourRange,
    Match,
    Mode,
    Principal,
    RuleModel,
    RuleTest,
    Size,
    SqlMask,
    StrList,
    TableRule,
    TestExpect,
    UserEntry,
    glob_regex,
    parse_duration,
    parse_size,
)
from proxy.rules.ruleset import RulesError, RuleSet

__all__ = [
    "ATTR_PARAM",
    "DEFAULT_STATEMENTS",
    "MASK_KINDS",
    "AlertRoute",
    "AlertWhen",
    "ColumnPolicy",
    "Defaults",
    "Duration",
    "ExtractionRule",
    "FunctionRule",
    "HourRange",
    "Match",
    "Mode",
    "Principal",
    "RuleFile",
    "RuleModel",
    "RuleSet",
    "RuleTest",
    "RulesError",
    "Size",
    "SqlMask",
    "StrList",
    "TableRule",
    "TestExpect",
    "UserEntry",
    "glob_regex",
    "load_rules",
    "parse_duration",
    "parse_size",
    "static_problems",
]
