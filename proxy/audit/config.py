"""Audit log settings, kept apart so every audit module can import them without cycles."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AuditConfig:
    """How and where the audit trail is written (DESIGN.md, Audit log)."""

    path: str  # OVERSIGHT_AUDIT_LOG, default "oversight-audit.jsonl"; "" disables the file
    key: bytes | None = None  # OVERSIGHT_AUDIT_KEY: HMAC-SHA256 key; None -> plain SHA-256
    rotate_bytes: int = 100 * 2**20  # rotate before the file would exceed this
    rotate_daily: bool = True  # rotate at UTC midnight
    fsync_interval: float = 1.0  # seconds between fsyncs (0 = fsync every batch)
    stdout: bool = False  # also write each record as a JSON line to stdout
    fail_open: bool = False  # unwritable log: False -> refuse statements, True -> serve, log
