"""The rule set that polices nothing, for tests about the proxy rather than the policy.

Every statement kind is allowed, unparsed statements pass, nothing is masked.
A test that needs rules appends its own sections: `OPEN_RULES + "rules: ..."`.
"""

OPEN_RULES = """\
version: 1
defaults:
  mode: enforce
  unknown_tables: allow
  unparsed: allow
  statements: [all]
"""
