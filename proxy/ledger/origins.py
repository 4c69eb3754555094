"""Where a view's columns come from, read from the view's stored query tree.

A result column read through a view has the view as its origin in a
RowDescription. PostgreSQL stores the view's query (pg_rewrite.ev_action,
a pg_node_tree) with, on each output column, the same origin a
RowDescription of that query would carry: `:resorigtbl` and `:resorigcol`
of its top-level TargetEntry. `view_origins` reads those, so the ledger
can watch a view's column that passes a subject's key through, exactly as
PostgreSQL itself traces it (a computed column has none).

The node tree is read by a tokenizer that knows its quoting (backslash
escapes, double-quoted strings) and counts nesting, to take only the
top-level query's target list; a text it cannot read yields no origins.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r'\\.|"(?:[^"\\]|\\.)*"|[{}()]|:targetList(?= )'
    r"|:(?:resno|resorigtbl|resorigcol|resjunk) [^\s{}()]+"
)


def view_origins(tree: str) -> dict[int, tuple[int, int]]:
    """Output column number -> (table OID, attnum) of its origin, for the columns that have one."""
    out: dict[int, tuple[int, int]] = {}
    depth = 0
    pending = False  # just read the top-level query's `:targetList`
    in_list = False  # inside that list (depth 3; its entries at depth 4)
    entry: dict[str, str] = {}
    try:
        for m in _TOKEN.finditer(tree):
            tok = m.group()
            if tok in ("{", "("):
                if pending and tok == "(" and depth == 2:
                    in_list = True
                pending = False
                depth += 1
                if in_list and depth == 4:
                    entry = {}
            elif tok in ("}", ")"):
                pending = False
                if in_list and depth == 4 and entry.get("resjunk") == "false":
                    tbl, col = int(entry.get("resorigtbl", "0")), int(entry.get("resorigcol", "0"))
                    if tbl and col:
                        out[int(entry["resno"])] = (tbl, col)
                elif in_list and depth == 3:
                    return out  # the end of the target list
                depth -= 1
            elif tok == ":targetList":
                pending = depth == 2  # ({QUERY ... :targetList (: the first query's own
            elif in_list and depth == 4 and tok.startswith(":"):
                name, _, value = tok[1:].partition(" ")
                entry[name] = value
    except (ValueError, KeyError):
        return {}
    return {}  # no target list found: nothing is trusted
