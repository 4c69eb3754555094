"""The chain-verify result of every file a report read (proxy/audit/verify.py, per chain).

A report over edited or truncated files would state figures nobody can rely
on, so the user report carries each chain's verdict and `chain_ok`. Files
from several proxy instances are several chains; each is walked separately,
oldest rotated file first.
"""

from __future__ import annotations

from typing import Any

from proxy.audit.verify import verify_files
from proxy.reports.files import chains


def verify_all(
    files: list[str], key: bytes | None, *, partial: bool = False
) -> list[dict[str, Any]]:
    """One verdict per chain: its files, records verified, and the first problem or None."""
    out: list[dict[str, Any]] = []
    for group in chains(files):
        verdict = verify_files(group, key, partial=partial)
        out.append(
            {
                "files": group,
                "ok": verdict.ok,
                "records": verdict.records,
                "problem": None if verdict.problem is None else str(verdict.problem),
            }
        )
    return out
