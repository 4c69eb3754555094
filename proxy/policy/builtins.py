"""What lives in pg_catalog and information_schema, so unknown names can fail closed.

The catalog snapshot lists only relations and functions outside the system
schemas. Without these lists an unqualified name the snapshot does not know
would have to be assumed a built-in, and `newfunc()` created after the snapshot
would pass as `pg_catalog.newfunc`. The lists are PostgreSQL 16's (the names
are stable across versions; a newer server's new built-ins are refused for users
with a policy until a `functions:` rule names them). Objects in the system
schemas can only be created by a superuser, so the lists cannot go stale under
an application's feet.
"""

from __future__ import annotations

from importlib.resources import files


def _load(name: str) -> frozenset[str]:
    text = files("proxy.policy").joinpath(name).read_text(encoding="utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


BUILTIN_FUNCTIONS = _load("builtin_functions.txt")  # "pg_catalog.count", ...
BUILTIN_RELATIONS = _load("builtin_relations.txt")  # "pg_catalog.pg_class", ...

# SQL syntax that looks like a call but is no pg_proc function, where sqlglot reads it
# as a call by name: `x = ALL (...)`, `ROW(...)`, the SQL/XML and SQL/JSON forms.
SQL_SYNTAX = frozenset(
    {
        "all",
        "any",
        "some",
        "row",
        "grouping",
        "overlaps",
        "merge_action",
        "xmlconcat",
        "xmlelement",
        "xmlexists",
        "xmlforest",
        "xmlparse",
        "xmlpi",
        "xmlroot",
        "xmlserialize",
        "xmltable",
        "json_array",
        "json_arrayagg",
        "json_exists",
        "json_object",
        "json_objectagg",
        "json_query",
        "json_scalar",
        "json_serialize",
        "json_table",
        "json_value",
    }
)
