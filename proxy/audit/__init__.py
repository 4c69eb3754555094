"""Oversight's audit trail: a hash-chained JSON-lines record of every statement and session.

See DESIGN.md, "Audit log". `AuditLog` is the process's single writer;
`cmd_verify` and `cmd_tail` back `oversight audit verify` and `oversight tail`;
`redact_sql` replaces literals before a statement is recorded.
"""

from __future__ import annotations

from proxy.audit.config import AuditConfig
from proxy.audit.record import GENESIS, canonical, compute_hash, format_ts, seal
from proxy.audit.rotate import discover
from proxy.audit.tail import cmd_tail, format_record
from proxy.audit.verify import Verdict, cmd_verify, verify_files
from proxy.audit.writer import AuditLog
from proxy.redact import redact_sql

__all__ = [
    "GENESIS",
    "AuditConfig",
    "AuditLog",
    "Verdict",
    "canonical",
    "cmd_tail",
    "cmd_verify",
    "compute_hash",
    "discover",
    "format_record",
    "format_ts",
    "redact_sql",
    "seal",
    "verify_files",
]
