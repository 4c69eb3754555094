"""The one error a report raises for the user: the message says what to fix."""

from __future__ import annotations


class ReportError(ValueError):
    """A report that cannot be made as asked (unknown subject or column, no files, bad since)."""
