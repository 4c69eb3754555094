"""The chain-verify result of every file a report read (proxy/audit/verify.py, per chain).

A report over edited or truncated files would state figures nobody can rely
on, so the user report carries each chain's verdict and `chain_ok`. Files
from several proxy instances are several chains; each is walked separately,
oldest rotated file first.

Walking a chain is Python work per record (parse, canonical JSON, HMAC), the
slowest part of a report over gigabytes. The files of a chain link only
through their ends (a file's first `prev` is the last `hash` of the file
before), so with `workers` > 1 each file is checked in its own process from
the previous file's last hash, which is read from its tail without
walking it, and the verdicts are joined in chain order: the same answer as
one walk, in a fraction of the time on several cores.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

from proxy.audit.rotate import BrokenHead, head_of_file
from proxy.audit.verify import verify_files
from proxy.reports.files import chains

PARALLEL_BYTES = 64 * 2**20  # below this, starting processes costs more than it saves
_Task = tuple[str, bytes | None, bool, str | None]  # file, key, partial, after


def _verify_one(task: _Task) -> tuple[int, str | None]:
    path, key, partial, after = task
    verdict = verify_files([path], key, partial=partial, after=after)
    return verdict.records, None if verdict.problem is None else str(verdict.problem)


def _tasks(group: list[str], key: bytes | None, partial: bool) -> list[_Task]:
    tasks: list[_Task] = []
    after: str | None = None
    loose = partial  # may the next file's first record continue an unknown chain?
    for path in group:
        tasks.append((path, key, loose, after))
        try:
            head = head_of_file(path)
        except (OSError, BrokenHead):
            head = None  # its own check names the problem; the next one cannot be linked
            after, loose = None, True
            continue
        if head is not None:
            after, loose = head.hash, False
    return tasks


def _size(files: list[str]) -> int:
    total = 0
    for path in files:
        with contextlib.suppress(OSError):  # the check says it cannot be read
            total += os.path.getsize(path)
    return total


def verify_all(
    files: list[str],
    key: bytes | None,
    *,
    partial: bool = False,
    workers: int = 1,
    min_parallel_bytes: int = PARALLEL_BYTES,
) -> list[dict[str, Any]]:
    """One verdict per chain: its files, records verified, and the first problem or None."""
    groups = chains(files)
    per_group = [_tasks(group, key, partial) for group in groups]
    flat = [task for tasks in per_group for task in tasks]
    pool: Executor | None = None
    if workers > 1 and len(flat) > 1 and _size(files) >= min_parallel_bytes:
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded process
        pool = ProcessPoolExecutor(max_workers=min(workers, len(flat)), mp_context=ctx)
    try:
        results = list(pool.map(_verify_one, flat)) if pool else [_verify_one(t) for t in flat]
    finally:
        if pool is not None:
            pool.shutdown()
    out: list[dict[str, Any]] = []
    i = 0
    for group, tasks in zip(groups, per_group, strict=True):
        records, problem = 0, None
        for n, what in results[i : i + len(tasks)]:
            records += n
            if what is not None:
                problem = what
                break
        i += len(tasks)
        out.append({"files": group, "ok": problem is None, "records": records, "problem": problem})
    return out
