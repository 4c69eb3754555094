"""Oversight: a transparent PostgreSQL access proxy.

sqlglot logs a warning quoting the whole statement whenever it falls back to
a generic command (`CREATE ROLE ... PASSWORD '...'` among them). Statement
text may hold secrets and never belongs in the process log, so sqlglot's
logger is silenced here, where every import of the package passes; what the
engine decides is in the audit log, redacted.
"""

import logging

logging.getLogger("sqlglot").setLevel(logging.CRITICAL + 1)
