"""The `oversight` command (DESIGN.md, "The command").

Every subcommand that uses a setting reads it from one `Settings` object
(proxy/settings.py: OVERSIGHT_* environment, then `--config FILE` or
./oversight.toml), never from os.environ: a key set only in the file works
for `audit verify` as it does for `serve`. Command-line arguments beat
settings. `demo` alone reads no settings: it brings its own PostgreSQL, and
a deployment's settings could point it elsewhere.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from proxy.address import parse_address
from proxy.settings import Settings, load_settings, settings_help

EXIT_USAGE = 2


def _listen_arg(value: str) -> str:
    try:
        parse_address(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="oversight",
        description="Transparent PostgreSQL access proxy: row filters, column masks, "
        "audit and extraction guard, in line.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Settings for every subcommand that reads them (all but `demo`).
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config",
        metavar="FILE",
        help="TOML settings file (default ./oversight.toml); OVERSIGHT_* variables win",
    )

    sub.add_parser(
        "serve",
        help="run the proxy from settings",
        parents=[config],
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    d = sub.add_parser("demo", help="embedded PostgreSQL + sample data + example rules + proxy")
    d.add_argument("--keep", action="store_true", help="keep the data directory for next time")
    d.add_argument("--listen", default="127.0.0.1:6432", type=_listen_arg)
    d.add_argument("--data-dir", default=None)
    d.add_argument("--scale", type=float, default=1.0, help="data set size factor")

    for name, text in (("check", "validate rule files"), ("test", "run the rule files' tests")):
        c = sub.add_parser(name, help=text, parents=[config])
        c.add_argument(
            "rules", nargs="?", default=None, help="file or directory (default: the rules setting)"
        )
        c.add_argument("--schema", help="catalog from a schema file instead of the upstream")
        c.add_argument("--upstream", help="catalog from this postgresql:// URI")

    e = sub.add_parser(
        "explain", help="decision, rules and rewritten SQL, without running it", parents=[config]
    )
    e.add_argument("--user", required=True)
    e.add_argument("--rules", default=None, help="default: the rules setting")
    e.add_argument("--schema")
    e.add_argument("--upstream", help="default: the upstream setting, unless --schema")
    e.add_argument("--application", default="")
    e.add_argument("--client-ip", default="127.0.0.1")
    e.add_argument("sql")

    i = sub.add_parser(
        "identity",
        help="the groups and attributes a user's sessions get, and which source gave each",
        parents=[config],
    )
    i.add_argument("user")
    i.add_argument("--rules", default=None, help="default: the rules setting")

    t = sub.add_parser("tail", help="follow the audit log, one line per record", parents=[config])
    t.add_argument("file", nargs="?", default=None, help="default: the audit_log setting")
    t.add_argument("--blocked", action="store_true", help="only refused and cut-off statements")
    t.add_argument("--user")
    t.add_argument("--since", help="RFC 3339 time or relative (10m, 2h)")
    t.add_argument("-f", "--follow", action="store_true")
    t.add_argument("--json", action="store_true", help="raw JSON lines")

    a = sub.add_parser("audit", help="audit log tools")
    asub = a.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    v = asub.add_parser(
        "verify", help="check the hash chain of audit files (key: audit_key)", parents=[config]
    )
    v.add_argument("files", nargs="+")
    v.add_argument(
        "--rotated", action="store_true", help="also check the rotated files before each file"
    )
    v.add_argument(
        "--partial",
        action="store_true",
        help="the first record may continue a chain (older files are gone)",
    )

    al = sub.add_parser("alerts", help="alert destinations")
    alsub = al.add_subparsers(dest="alerts_command", required=True, metavar="SUBCOMMAND")
    at = alsub.add_parser(
        "test", help="send one sample alert to every destination", parents=[config]
    )
    at.add_argument("rules", nargs="?", default=None, help="default: the rules setting")

    from proxy.commands.report import add_arguments as add_report

    add_report(sub, config)

    pw = sub.add_parser(
        "passwd", help="write a SCRAM-SHA-256 verifier for proxy auth mode", parents=[config]
    )
    pw.add_argument("user")
    pw.add_argument("--file", default=None, help="users file (default: the users_file setting)")
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


def _settings(args: argparse.Namespace) -> Settings:
    """The one settings object; a bad one exits 2 with one line naming the setting."""
    from pydantic import ValidationError

    try:
        return load_settings(args.config)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "settings"
        msg = str(err["msg"]).removeprefix("Value error, ")
        print(f"oversight: bad setting {where}: {msg}", file=sys.stderr)
    except ValueError as e:
        print(f"oversight: {e}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _serve(args: argparse.Namespace) -> int:
    from proxy.run import serve

    settings = _settings(args)
    if not settings.upstream:
        print(
            "oversight: no upstream: set OVERSIGHT_UPSTREAM (or `upstream` in the config "
            "file) to a postgresql:// URI",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return serve(settings)


def _demo(args: argparse.Namespace) -> int:
    from proxy.demo.run import cmd_demo

    return cmd_demo(keep=args.keep, listen=args.listen, data_dir=args.data_dir, scale=args.scale)


def _check(args: argparse.Namespace) -> int:
    from proxy.commands.rules import cmd_check

    settings = _settings(args)  # also when unused: a broken --config is reported, not ignored
    return cmd_check(
        args.rules or settings.rules, args.schema, args.upstream, settings.source_attributes
    )


def _test(args: argparse.Namespace) -> int:
    from proxy.commands.rules import cmd_test

    settings = _settings(args)
    return cmd_test(
        args.rules or settings.rules, args.schema, args.upstream, settings.source_attributes
    )


def _explain(args: argparse.Namespace) -> int:
    from proxy.commands.rules import cmd_explain

    settings = _settings(args)
    upstream = args.upstream
    if not args.schema and not upstream:
        upstream = settings.upstream
    from proxy.commands.identity import resolve
    from proxy.idsrc import IdentityUnavailable

    try:  # the groups a session of this user would get from roles too
        identity = resolve(settings, args.user)
    except IdentityUnavailable as e:
        print(f"oversight: {e.message}", file=sys.stderr)
        return 1
    return cmd_explain(
        args.user,
        args.sql,
        args.rules or settings.rules,
        args.schema,
        upstream,
        application=args.application,
        client_ip=args.client_ip,
        identity=identity,
        attributes=settings.source_attributes,
    )


def _identity(args: argparse.Namespace) -> int:
    from proxy.commands.identity import cmd_identity
    from proxy.rules import RulesError, load_rules

    settings = _settings(args)
    try:
        rules = load_rules(args.rules or settings.rules, settings.source_attributes)
    except RulesError as e:
        print("oversight: " + "\n  ".join(e.problems), file=sys.stderr)
        return 1
    return cmd_identity(settings, rules, args.user)


def _tail(args: argparse.Namespace) -> int:
    from proxy.audit import cmd_tail

    settings = _settings(args)
    path = args.file or settings.audit_log
    if not path:
        print("oversight: the audit log is off (audit_log is empty); name a file", file=sys.stderr)
        return EXIT_USAGE
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

    key = _settings(args).audit_key
    return cmd_verify(
        args.files,
        key.get_secret_value().encode() if key else None,
        discover_rotated=args.rotated,
        partial=args.partial,
    )


def _alerts(args: argparse.Namespace) -> int:
    from proxy.commands.alerts import cmd_alerts_test

    settings = _settings(args)
    return cmd_alerts_test(args.rules or settings.rules, settings.source_attributes)


def _report(args: argparse.Namespace) -> int:
    from proxy.commands.report import cmd_report

    return cmd_report(args, _settings(args))


def _passwd(args: argparse.Namespace) -> int:
    from proxy.passwd import cmd_passwd

    settings = _settings(args)
    path = args.file or settings.users_file
    if not path:
        print("oversight: give --file or set users_file (OVERSIGHT_USERS_FILE)", file=sys.stderr)
        return EXIT_USAGE
    return cmd_passwd(args.user, path)


COMMANDS = {
    "serve": _serve,
    "demo": _demo,
    "check": _check,
    "test": _test,
    "explain": _explain,
    "identity": _identity,
    "tail": _tail,
    "audit": _audit,
    "alerts": _alerts,
    "passwd": _passwd,
    "report": _report,
}

if __name__ == "__main__":
    sys.exit(main())
