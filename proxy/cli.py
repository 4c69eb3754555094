"""The `oversight` command (DESIGN.md, "The command")."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="oversight",
        description="Transparent PostgreSQL access proxy: row filters, column masks, "
        "audit and extraction guard, in line.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the proxy from settings")
    s.add_argument("--config", help="TOML settings file (default ./oversight.toml)")

    d = sub.add_parser("demo", help="embedded PostgreSQL + sample data + example rules + proxy")
    d.add_argument("--keep", action="store_true", help="keep the data directory for next time")
    d.add_argument("--listen", default="127.0.0.1:6432")
    d.add_argument("--data-dir", default=None)
    d.add_argument("--scale", type=float, default=1.0, help="data set size factor")

    for name, text in (("check", "validate rule files"), ("test", "run the rule files' tests")):
        c = sub.add_parser(name, help=text)
        c.add_argument("rules", nargs="?", default=None, help="file or directory of *.yaml")
        c.add_argument("--schema", help="catalog from a schema file instead of the upstream")
        c.add_argument("--upstream", help="catalog from this postgresql:// URI")

    e = sub.add_parser("explain", help="decision, rules and rewritten SQL, without running it")
    e.add_argument("--user", required=True)
    e.add_argument("--rules", default=None)
    e.add_argument("--schema")
    e.add_argument("--upstream")
    e.add_argument("--application", default="")
    e.add_argument("--client-ip", default="127.0.0.1")
    e.add_argument("sql")

    t = sub.add_parser("tail", help="follow the audit log, one line per record")
    t.add_argument("file", nargs="?", default=None)
    t.add_argument("--blocked", action="store_true", help="only refused and cut-off statements")
    t.add_argument("--user")
    t.add_argument("--since", help="RFC 3339 time or relative (10m, 2h)")
    t.add_argument("-f", "--follow", action="store_true")
    t.add_argument("--json", action="store_true", help="raw JSON lines")

    a = sub.add_parser("audit", help="audit log tools")
    asub = a.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    v = asub.add_parser("verify", help="check the hash chain of audit files")
    v.add_argument("files", nargs="+")
    v.add_argument(
        "--rotated", action="store_true", help="also check the rotated files before each file"
    )
    v.add_argument(
        "--partial",
        action="store_true",
        help="the first record may continue a chain (older files are gone)",
    )

    pw = sub.add_parser("passwd", help="write a SCRAM-SHA-256 verifier for proxy auth mode")
    pw.add_argument("user")
    pw.add_argument("--file", default=None, help="users file (default OVERSIGHT_USERS_FILE)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


def _settings_or_exit(config: str | None = None) -> object:
    from pydantic import ValidationError

    from proxy.settings import load_settings

    try:
        return load_settings(config)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "settings"
        msg = str(err["msg"]).removeprefix("Value error, ")
        print(f"oversight: bad setting {where}: {msg}", file=sys.stderr)
    except ValueError as e:
        print(f"oversight: {e}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _rules_path(given: str | None) -> str:
    return given or os.environ.get("OVERSIGHT_RULES", "rules/")


def _serve(args: argparse.Namespace) -> int:
    from proxy.run import serve
    from proxy.settings import Settings

    settings = _settings_or_exit(args.config)
    assert isinstance(settings, Settings)
    if not settings.upstream:
        print(
            "oversight: no upstream: set OVERSIGHT_UPSTREAM to a postgresql:// URI",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return serve(settings)


def _demo(args: argparse.Namespace) -> int:
    from proxy.demo.run import cmd_demo

    return cmd_demo(keep=args.keep, listen=args.listen, data_dir=args.data_dir, scale=args.scale)


def _check(args: argparse.Namespace) -> int:
    from proxy.commands.rules import cmd_check

    return cmd_check(_rules_path(args.rules), args.schema, args.upstream)


def _test(args: argparse.Namespace) -> int:
    from proxy.commands.rules import cmd_test

    return cmd_test(_rules_path(args.rules), args.schema, args.upstream)


def _explain(args: argparse.Namespace) -> int:
    from proxy.commands.rules import cmd_explain

    upstream = args.upstream
    if not args.schema and not upstream:
        upstream = os.environ.get("OVERSIGHT_UPSTREAM")
    return cmd_explain(
        args.user,
        args.sql,
        _rules_path(args.rules),
        args.schema,
        upstream,
        application=args.application,
        client_ip=args.client_ip,
    )


def _audit_key() -> bytes | None:
    key = os.environ.get("OVERSIGHT_AUDIT_KEY")
    return key.encode() if key else None


def _tail(args: argparse.Namespace) -> int:
    from proxy.audit import cmd_tail

    path = args.file or os.environ.get("OVERSIGHT_AUDIT_LOG", "oversight-audit.jsonl")
    return cmd_tail(
        path,
        blocked=args.blocked,
        user=args.user,
        since=args.since,
        follow=args.follow,
        json_out=args.json,
    )


def _audit(args: argparse.Namespace) -> int:
    from proxy.audit import cmd_verify

    return cmd_verify(args.files, _audit_key(), discover_rotated=args.rotated, partial=args.partial)


def _passwd(args: argparse.Namespace) -> int:
    from proxy.passwd import cmd_passwd

    path = args.file or os.environ.get("OVERSIGHT_USERS_FILE")
    if not path:
        print("oversight: give --file or set OVERSIGHT_USERS_FILE", file=sys.stderr)
        return EXIT_USAGE
    return cmd_passwd(args.user, path)


COMMANDS = {
    "serve": _serve,
    "demo": _demo,
    "check": _check,
    "test": _test,
    "explain": _explain,
    "tail": _tail,
    "audit": _audit,
    "passwd": _passwd,
}

if __name__ == "__main__":
    sys.exit(main())
