"""`report user`: one person's activity, as a supervisor reads it.

One scan of the audit files copies the user's records (within `since`) into
a temporary DuckDB table; every figure is then an SQL aggregate over that
small table. Distinct subjects come from the `subjects` hash lists, so they
are lower bounds whenever a statement's list was capped (its `*_count` is
larger than the list): the report says "at least" then.
"""

from __future__ import annotations

from typing import Any

from proxy.reports.source import Source, subject_entry

REFUSED = ("block", "cutoff")
LIST_LIMIT = 200  # sessions, refusals, canaries listed (the totals count them all)

_TOTALS = """
SELECT count(*) FILTER (WHERE event = 'statement') AS statements,
       coalesce(sum(rows) FILTER (WHERE event = 'statement'), 0) AS rows,
       coalesce(sum(bytes) FILTER (WHERE event = 'statement'), 0) AS bytes,
       count(*) FILTER (WHERE decision IN ('block', 'cutoff')) AS refused,
       count(*) FILTER (WHERE decision = 'throttle') AS throttled,
       count(*) FILTER (WHERE event = 'auth_failure') AS auth_failures,
       count(DISTINCT session) FILTER (WHERE session IS NOT NULL) AS sessions,
       min(ts) AS first, max(ts) AS last
FROM mine
"""

_SESSIONS = """
SELECT session, min(ts) AS first, max(ts) AS last,
       count(*) FILTER (WHERE event = 'statement') AS statements,
       coalesce(sum(rows) FILTER (WHERE event = 'statement'), 0) AS rows,
       coalesce(list(DISTINCT purpose) FILTER (WHERE purpose IS NOT NULL), []) AS purposes,
       date_diff('microsecond', CAST(min(ts) AS TIMESTAMPTZ), CAST(max(ts) AS TIMESTAMPTZ))
           / 3.6e9 AS hours
FROM mine WHERE session IS NOT NULL GROUP BY session ORDER BY first, session
"""

_NAMED = """
SELECT name, count(*) AS statements, coalesce(sum(rows), 0) AS rows
FROM (SELECT unnest({field}) AS name, rows FROM mine
      WHERE event = 'statement' AND decision NOT IN ('block', 'cutoff'))
GROUP BY name ORDER BY statements DESC, name
"""

_SUBJECT_ENTRIES = f"""
CREATE TEMP TABLE entries AS
SELECT subject, {subject_entry("subjects", "subject")} AS v
FROM (SELECT subjects, unnest(json_keys(subjects)) AS subject
      FROM mine WHERE subjects IS NOT NULL AND json_type(subjects) = 'OBJECT')
"""

_SUBJECTS = """
WITH caps AS (
    SELECT subject,
           coalesce(bool_or(v.seen_count > coalesce(len(v.seen), 0)), false) AS seen_capped,
           coalesce(bool_or(v.looked_up_count > coalesce(len(v.looked_up), 0)), false)
               AS looked_up_capped
    FROM entries GROUP BY subject
), seen AS (
    SELECT subject, count(DISTINCT h) AS n
    FROM (SELECT subject, unnest(v.seen) AS h FROM entries) GROUP BY subject
), looked AS (
    SELECT subject, count(DISTINCT l.hash) AS n
    FROM (SELECT subject, unnest(v.looked_up) AS l FROM entries) GROUP BY subject
)
SELECT caps.subject, coalesce(seen.n, 0) AS seen, coalesce(looked.n, 0) AS looked_up,
       seen_capped, looked_up_capped
FROM caps LEFT JOIN seen USING (subject) LEFT JOIN looked USING (subject)
ORDER BY subject
"""

_REFUSALS = f"""
SELECT decision, rules,
       CASE WHEN decision = 'cutoff' AND error IS NOT NULL THEN error
            ELSE coalesce(nullif(reason, ''), error, '') END AS reason,
       count(*) AS count, min(ts) AS first, max(ts) AS last
FROM mine WHERE decision IN ('block', 'cutoff')
GROUP BY ALL ORDER BY count DESC, last DESC LIMIT {LIST_LIMIT}
"""

_DETECTORS = """
SELECT d->>'rule' AS rule, coalesce(d->>'detector', d->>'budget', '?') AS detector,
       d->>'action' AS action, count(*) AS count, min(ts) AS first, max(ts) AS last
FROM (SELECT ts, unnest(CAST(detectors AS JSON[])) AS d FROM mine
      WHERE detectors IS NOT NULL AND json_type(detectors) = 'ARRAY')
GROUP BY ALL ORDER BY count DESC, rule
"""

_CANARIES = f"""
SELECT ts, session, coalesce(canary->>'$', rule->>'$') AS canary, subject->>'$' AS subject,
       action->>'$' AS action
FROM mine WHERE event = 'canary' ORDER BY ts LIMIT {LIST_LIMIT}
"""

_PURPOSES = """
SELECT purpose, count(*) AS statements, min(ts) AS first, max(ts) AS last
FROM mine WHERE event = 'statement' GROUP BY purpose ORDER BY statements DESC, purpose
"""

_HOURS = """
SELECT CAST(substr(ts, 12, 2) AS INTEGER) AS hour, count(*) AS statements
FROM mine WHERE event = 'statement' AND ts IS NOT NULL GROUP BY hour
"""


def user_report(source: Source, user: str, since: str | None) -> dict[str, Any]:
    """The report as one JSON-ready dict (the --json shape; render_* draw it)."""
    source.execute("DROP TABLE IF EXISTS mine")
    source.execute("DROP TABLE IF EXISTS entries")
    source.execute(
        'CREATE TEMP TABLE mine AS SELECT * FROM {audit} WHERE "user" = $user '
        "AND ($since IS NULL OR ts >= $since)",
        {"user": user, "since": since},
    )
    totals = source.rows(_TOTALS)[0]
    sessions = source.rows(_SESSIONS)
    source.execute(_SUBJECT_ENTRIES)
    subjects = source.rows(_SUBJECTS)
    canaries = source.rows(_CANARIES)
    canary_count = source.rows("SELECT count(*) AS n FROM mine WHERE event = 'canary'")[0]["n"]
    hours = {r["hour"]: r["statements"] for r in source.rows(_HOURS)}
    return {
        "user": user,
        "since": since,
        "first": totals["first"],
        "last": totals["last"],
        "sessions": totals["sessions"],
        "session_hours": round(sum(s["hours"] or 0.0 for s in sessions), 3),
        "statements": totals["statements"],
        "rows": int(totals["rows"]),
        "bytes": int(totals["bytes"]),
        "refused": totals["refused"],
        "throttled": totals["throttled"],
        "auth_failures": totals["auth_failures"],
        "tables": source.rows(_NAMED.format(field="tables")),
        "columns": source.rows(_NAMED.format(field="columns")),
        "subjects_seen": sum(s["seen"] for s in subjects),
        "subjects_looked_up": sum(s["looked_up"] for s in subjects),
        "subjects_at_least": any(s["seen_capped"] or s["looked_up_capped"] for s in subjects),
        "subjects": subjects,
        "refusals": source.rows(_REFUSALS),
        "detectors": source.rows(_DETECTORS),
        "canaries": canary_count,
        "canary_events": canaries,
        "purposes": source.rows(_PURPOSES),
        "hours": [hours.get(h, 0) for h in range(24)],
        "session_list": [
            {**s, "hours": round(s["hours"] or 0.0, 3)} for s in sessions[:LIST_LIMIT]
        ],
    }
