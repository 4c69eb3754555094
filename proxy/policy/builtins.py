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

# Words PostgreSQL never looks up as a function when written unquoted and unqualified:
# its reserved and column-name keywords (PostgreSQL 16's src/include/parser/kwlist.h).
# gram.y's func_name admits only identifiers, unreserved and type/function-name
# keywords, so `word(` with one of these is one of the special forms of
# func_expr_common_subexpr (CAST, COALESCE, EXTRACT, TRIM, XMLELEMENT, JSON_OBJECT...),
# ROW(...), ARRAY(...), EXISTS(...), GROUPING(...), `x = ANY (...)`, a type with a
# modifier (`varchar(10)`), or a syntax error. Two exceptions are looked up by name:
# gram.y reads `substring(a, b)` and `overlay(a, b, c)` (commas, not FROM/PLACING)
# as plain calls of an unqualified `substring` / `overlay`. The forms PostgreSQL 17
# added (JSON_VALUE, JSON_TABLE, MERGE_ACTION...) are plain names in 16, and so are
# looked up, and refused unless the catalog or a rule knows them.
_RESERVED = """
all analyse analyze and any array as asc asymmetric both case cast check collate column
constraint create current_catalog current_date current_role current_time current_timestamp
current_user default deferrable desc distinct do else end except false fetch for foreign from
grant group having in initially intersect into lateral leading limit localtime localtimestamp
not null offset on only or order placing primary references returning select session_user
some symmetric system_user table then to trailing true union unique user using variadic when
where window with
"""
_COL_NAME = """
between bigint bit boolean char character coalesce dec decimal exists extract float greatest
grouping inout int integer interval json_array json_arrayagg json_object json_objectagg least
national nchar none normalize nullif numeric out overlay position precision real row setof
smallint substring time timestamp treat trim values varchar xmlattributes xmlconcat xmlelement
xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable
"""
NOT_FUNCTION_NAMES = frozenset((_RESERVED + _COL_NAME).split()) - {"substring", "overlay"}
