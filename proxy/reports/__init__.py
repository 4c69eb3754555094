"""Reports over the audit files (DESIGN.md, "Audit log"): `report subject` and `report user`.

DuckDB, embedded, reads the JSON lines of any number of audit files (current
and rotated, many proxy instances); the figures are SQL over them. `files`
finds the files, `source` is the DuckDB relation over them, `subject` and
`user` are the two reports (plain dicts, the --json shape), `chain` adds the
chain-verify verdicts, `render_text` and `render_html` draw them.
The CLI (proxy/commands/report.py) and the dashboard (proxy/admin.py) both
call `run_subject` / `run_user` here, so they show the same report.
"""
