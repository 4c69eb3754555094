"""The two reports end to end: files found, DuckDB run, chains verified; one call each.

The CLI and the dashboard both come through here with a `ReportConfig`, so
`oversight report user alice` and the dashboard's user page are the same
report. Everything blocks (file reads, DuckDB): the admin server runs these
on a thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from proxy.audit.record import format_ts
from proxy.audit.tail import parse_since
from proxy.reports.chain import verify_all
from proxy.reports.errors import ReportError
from proxy.reports.files import resolve
from proxy.reports.source import Source
from proxy.reports.subject import search_for, subject_report
from proxy.reports.user import user_report
from proxy.rules import RuleSet


@dataclass(frozen=True)
class ReportConfig:
    """Where the audit files are and the keys to read them with."""

    audit: Sequence[str]  # paths (with their rotated siblings) or globs
    audit_key: bytes | None  # the chain's HMAC key (None: plain SHA-256)
    ledger_keys: Sequence[bytes]  # the current ledger key first, then older ones still accepted
    rules: Callable[[], RuleSet]  # the rule set subject ids and columns are checked against
    partial: bool = False  # chains may start mid-way (older files archived elsewhere)
    verify_workers: int = 1  # processes walking hash chains (the CLI uses every core)
    threads: int = 0  # DuckDB threads; 0: one per core (the dashboard uses 1)
    now: Callable[[], datetime] | None = field(default=None, compare=False)


def since_ts(text: str | None, now: datetime | None = None) -> str | None:
    """`--since` (30d, 12h, or an RFC 3339 time) as the audit log writes timestamps."""
    if not text:
        return None
    try:
        return format_ts(parse_since(text, now))
    except ValueError as exc:
        raise ReportError(str(exc).replace("--since: ", "since: ")) from None


def run_subject(
    config: ReportConfig,
    subject: str,
    key: str | None,
    lookup: str | None,
    since: str | None,
    also: Sequence[tuple[str, str]] = (),
) -> list[dict[str, Any]]:
    """Lines of `report subject` (ReportError for a bad subject, column or since).

    `also`: with a KEY, the subject's values in its `lookups` columns, so
    searches for it by those count too (see `lookup_values`).
    """
    search = search_for(config.rules(), subject, key, lookup)
    if also and search.by_key:
        search = replace(search, also=tuple(also))
    cutoff = since_ts(since, config.now() if config.now else None)
    files = resolve(config.audit)
    with Source(files, config.threads) as source:
        return subject_report(source, search, config.ledger_keys, cutoff)


def run_user(
    config: ReportConfig, user: str, since: str | None, *, verify: bool = True
) -> dict[str, Any]:
    """`report user` as one dict, with the chain verdicts of the files read.

    Without `verify`, `chain_ok` is None: the figures stand unchecked (the
    chain walk is the slow part over gigabytes; a quick look can skip it).
    """
    cutoff = since_ts(since, config.now() if config.now else None)
    files = resolve(config.audit)
    with Source(files, config.threads) as source:
        report = user_report(source, user, cutoff)
    verdicts = (
        verify_all(files, config.audit_key, partial=config.partial, workers=config.verify_workers)
        if verify
        else []
    )
    report["chain_ok"] = all(v["ok"] for v in verdicts) if verify else None
    report["chains"] = verdicts
    report["files"] = files
    return report
