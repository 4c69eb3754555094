"""`oversight report subject|user`: the reports over the audit files, as text, JSON or a page.

Settings give the defaults: the audit log (with its rotated files), the chain
key, the ledger key and the older ledger keys still accepted, the rule files
that name the subjects. `--audit` replaces the files (paths or globs, many
proxy instances'); `--previous-key-file` adds older ledger keys, one a line.

Exit status: 0, or 1 when a user report's files fail chain verification (the
report is still printed, and says so), or 2 for a usage error. The chain walk
uses every core (one process per file); `--no-verify` skips it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from proxy.commands.subjectvalues import lookup_values
from proxy.reports.api import ReportConfig, run_subject, run_user
from proxy.reports.errors import ReportError
from proxy.reports.render_html import subject_html, user_html
from proxy.reports.render_text import subject_text, user_text
from proxy.rules import RulesError, RuleSet, load_rules
from proxy.settings import Settings

EXIT_USAGE = 2


def add_arguments(sub: Any, config: argparse.ArgumentParser) -> None:
    """Register `report subject` and `report user` under the `oversight` parser's `sub`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--audit",
        nargs="+",
        action="extend",
        metavar="PATH_OR_GLOB",
        help="audit files: a path (with its rotated files) or a glob; default: the audit_log "
        "setting and its rotated files",
    )
    common.add_argument("--json", action="store_true", help="JSON instead of text")
    common.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")
    r = sub.add_parser("report", help="reports over the audit files: subject, user")
    rsub = r.add_subparsers(dest="report_command", required=True, metavar="REPORT")
    s = rsub.add_parser(
        "subject",
        help="every user who received or searched for one subject",
        parents=[config, common],
    )
    s.add_argument("subject", help="a subject id of the rule files (e.g. person)")
    s.add_argument("key", nargs="?", default=None, help="the subject's key (e.g. 42)")
    s.add_argument("--by-lookup", metavar="COLUMN=VALUE", help="a search value on a lookup column")
    s.add_argument(
        "--no-resolve",
        action="store_true",
        help="with KEY: do not read the subject's lookup values (SSN, name...) from the"
        " upstream to find searches by them",
    )
    s.add_argument("--since", default="30d", help="age (30d, 12h) or RFC 3339 time; 'all'")
    s.add_argument("--rules", default=None, help="default: the rules setting")
    s.add_argument(
        "--previous-key-file",
        metavar="FILE",
        help="older ledger keys to accept too, one a line (after a key rotation)",
    )
    u = rsub.add_parser(
        "user", help="one person's activity: a supervisor's report", parents=[config, common]
    )
    u.add_argument("user")
    u.add_argument(
        "--partial",
        action="store_true",
        help="a chain may start mid-way (its older rotated files are archived elsewhere)",
    )
    u.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the chain verification (faster over gigabytes; chain_ok is null)",
    )
    u.add_argument("--since", default="7d", help="age (7d, 12h) or RFC 3339 time; 'all'")


def _keys(settings: Settings, key_file: str | None) -> list[bytes]:
    keys = settings.ledger_secrets
    if key_file:
        text = Path(key_file).read_text(encoding="utf-8")
        keys += [line.strip().encode() for line in text.splitlines() if line.strip()]
    return list(dict.fromkeys(keys))


def _rules(path: str, settings: Settings) -> RuleSet:
    try:
        return load_rules(path, settings.source_attributes)
    except RulesError as e:
        raise ReportError("the rule files do not load:\n  " + "\n  ".join(e.problems)) from None


def _config(args: argparse.Namespace, settings: Settings) -> ReportConfig:
    audit = list(args.audit or ([settings.audit_log] if settings.audit_log else []))
    if not audit:
        raise ReportError("the audit log is off (audit_log is empty); name files with --audit")
    rules_path = getattr(args, "rules", None) or settings.rules
    loaded: list[RuleSet] = []

    def rules() -> RuleSet:  # only the subject report needs them
        if not loaded:
            loaded.append(_rules(rules_path, settings))
        return loaded[0]

    try:
        keys = _keys(settings, getattr(args, "previous_key_file", None))
    except OSError as e:
        raise ReportError(f"--previous-key-file: {e.strerror or e}") from None
    key = settings.audit_key
    return ReportConfig(
        audit=audit,
        audit_key=key.get_secret_value().encode() if key else None,
        ledger_keys=keys,
        rules=rules,
        partial=getattr(args, "partial", False),
        verify_workers=os.cpu_count() or 1,
    )


def _since(text: str) -> str | None:
    return None if text.strip().lower() == "all" else text


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    try:
        config = _config(args, settings)
        if args.report_command == "subject":
            return _subject(args, config, settings)
        return _user(args, config)
    except ReportError as e:
        print(f"oversight: {e}", file=sys.stderr)
        return EXIT_USAGE


def _write_html(path: str, page: str) -> None:
    try:
        Path(path).write_text(page, encoding="utf-8")
    except OSError as e:
        raise ReportError(f"--html {path}: {e.strerror or e}") from None


def _also(
    args: argparse.Namespace, config: ReportConfig, settings: Settings
) -> list[tuple[str, str]]:
    """The subject's lookup values for a KEY report, when the upstream can tell."""
    rule = config.rules().subject(args.subject)
    if args.key is None or args.no_resolve or rule is None or not rule.lookups:
        return []
    if not settings.upstream:
        print(
            f"oversight: no upstream configured: searches for {args.subject} by"
            f" {', '.join(rule.lookups)} are not included",
            file=sys.stderr,
        )
        return []
    try:
        return lookup_values(settings.upstream, rule, args.key)
    except Exception as e:  # the report still answers for the key itself
        reason = getattr(e, "message", None) or str(e) or type(e).__name__
        print(
            f"oversight: could not read {rule.table} ({reason}): searches for"
            f" {args.subject} by {', '.join(rule.lookups)} are not included",
            file=sys.stderr,
        )
        return []


def _subject(args: argparse.Namespace, config: ReportConfig, settings: Settings) -> int:
    also = _also(args, config, settings)
    lines = run_subject(config, args.subject, args.key, args.by_lookup, _since(args.since), also)
    how = f"key {args.key}" if args.key is not None else args.by_lookup
    title = f"Disclosures of {args.subject} {how} since {args.since}"
    if args.html:
        _write_html(args.html, subject_html(lines, title))
    if args.json:
        out = sys.stdout.buffer
        for line in lines:
            out.write(orjson.dumps(line) + b"\n")
        out.flush()
    else:
        sys.stdout.write(subject_text(lines, title))
    return 0


def _user(args: argparse.Namespace, config: ReportConfig) -> int:
    report = run_user(config, args.user, _since(args.since), verify=not args.no_verify)
    if args.html:
        _write_html(args.html, user_html(report))
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report) + b"\n")
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(user_text(report))
    return 1 if report["chain_ok"] is False else 0
