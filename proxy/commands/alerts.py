"""`oversight alerts test [RULES]`: one sample alert to every destination, and what each answered.

Each destination gets its own attempt (its timeout, no retries, no queue):
the point is to see at once which receiver works and why another does not.
Exit 0 when every destination took the sample, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from urllib.parse import urlsplit

from proxy.alerts import sample_alert
from proxy.alerts.sinks import DeliveryError, make_sink
from proxy.audit import format_ts
from proxy.rules import AlertRoute, RulesError, load_rules


async def _try(route: AlertRoute, now: str) -> tuple[bool, str]:
    sink = make_sink(route)
    try:
        return True, await asyncio.wait_for(sink.send(sample_alert(now)), route.timeout)
    except TimeoutError:
        return False, f"no answer within {route.timeout:g}s"
    except DeliveryError as e:
        return False, str(e)
    finally:
        await sink.close()


def _where(url: str) -> str:
    """The destination without credentials or query (a webhook token must not be printed)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


async def _all(routes: list[AlertRoute]) -> list[tuple[bool, str]]:
    from datetime import UTC, datetime

    now = format_ts(datetime.now(UTC))
    return list(await asyncio.gather(*(_try(r, now) for r in routes)))


def cmd_alerts_test(rules_path: str, attributes: Iterable[str] = ()) -> int:
    try:
        rules = load_rules(rules_path, attributes)
    except RulesError as e:
        print("oversight: " + "\n  ".join(e.problems), file=sys.stderr)
        return 2
    if not rules.alerts:
        print(f"oversight: no alerts: section in {rules_path}", file=sys.stderr)
        return 1
    answers = asyncio.run(_all(rules.alerts))
    for route, (ok, answer) in zip(rules.alerts, answers, strict=True):
        where = _where(route.webhook or route.syslog or "")
        print(f"{route.id}: {route.fmt} to {where}: {'ok' if ok else 'FAILED'}: {answer}")
    return 0 if all(ok for ok, _ in answers) else 1
