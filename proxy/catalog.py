"""Schema snapshot the policy engine resolves names against.

The engine needs to know, without touching the database at decision time: which
relations exist in which schema (to resolve unqualified names through the
search_path), each table's columns in order (to build the masking subquery and
expand `*`), which governed tables a view reads (views are governed too), which
tables inherit from which (a partition of a governed table is governed), and
which functions live outside pg_catalog (they need a `functions:` rule).

Loaded from the upstream with asyncpg at start and on refresh, or from a
JSON/YAML schema file for `oversight explain --schema` and unit tests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from proxy.gucs import parse_search_path
from proxy.ledger.origins import view_origins

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")


@dataclass(frozen=True, slots=True)
class Relation:
    schema: str
    name: str
    kind: str = "table"  # table | view | matview | foreign | partitioned
    columns: tuple[str, ...] = ()
    # Each column's type name when the type is a pg_catalog one, else "" (domains,
    # enums, user types); empty when unknown. policy/pushdown.py reads it.
    types: tuple[str, ...] = ()
    reltuples: float = -1.0  # planner estimate; -1 unknown
    # Views: the base relations ("schema.name") the definition reads, transitively.
    depends_on: tuple[str, ...] = ()
    # Inheritance/partition parents ("schema.name"), transitively.
    parents: tuple[str, ...] = ()
    # Views: pg_get_viewdef read under an empty search_path (every name outside
    # pg_catalog schema-qualified), and the reloptions that change what reading
    # through it means (security_barrier, security_invoker, check_option=...).
    definition: str = ""
    options: tuple[str, ...] = ()
    # Runtime identity, from the upstream only (never in a schema file): the
    # table's OID and each column's attnum, which a RowDescription names a
    # result column's origin by (proxy/watching.py). 0 and () when unknown.
    oid: int = 0
    attnums: tuple[int, ...] = ()
    # Views and matviews: (attnum, table OID, attnum) of each column that passes a
    # table's column through, as PostgreSQL traces it (proxy/ledger/origins.py).
    origins: tuple[tuple[int, int, int], ...] = ()

    def attnum(self, column: str) -> int | None:
        """The attnum of `column`, when known."""
        if column not in self.columns or len(self.attnums) != len(self.columns):
            return None
        return self.attnums[self.columns.index(column)]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(slots=True)
class Catalog:
    relations: dict[str, Relation] = field(default_factory=dict)  # "schema.name" -> Relation
    # Functions outside pg_catalog: name -> schemas that define one with that name.
    functions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    schemas: tuple[str, ...] = ()
    version: str = ""
    # The database's default search_path as the catalog account saw it at load time.
    search_path: tuple[str, ...] = ("$user", "public")
    _by_name: dict[str, list[str]] = field(default_factory=dict, repr=False)
    # Names of views and matviews: a statement naming none needs no view expansion.
    view_names: frozenset[str] = field(default_factory=frozenset, repr=False)

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        self._by_name = {}
        for rel in self.relations.values():
            self._by_name.setdefault(rel.name, []).append(rel.schema)
        self.view_names = frozenset(
            r.name for r in self.relations.values() if r.kind in ("view", "matview")
        )
        if not self.version:
            # OIDs are not in the file shape but tell a table dropped and made
            # again apart: a fresh load that differs only in them is a new snapshot.
            ids = [(q, r.oid, r.attnums, r.origins) for q, r in self.relations.items() if r.oid]
            data = [self.to_dict(), sorted(ids)] if ids else self.to_dict()
            self.version = hashlib.sha256(orjson.dumps(data)).hexdigest()[:16]

    def get(self, schema: str, name: str) -> Relation | None:
        return self.relations.get(f"{schema}.{name}")

    def schemas_with(self, name: str) -> list[str]:
        return self._by_name.get(name, [])

    def function_schemas(self, name: str) -> tuple[str, ...]:
        return self.functions.get(name, ())

    def to_dict(self) -> dict[str, Any]:
        rels = []
        for r in sorted(self.relations.values(), key=lambda r: r.qualified):
            d: dict[str, Any] = {"schema": r.schema, "name": r.name, "kind": r.kind}
            d["columns"] = list(r.columns)
            if r.types:
                d["types"] = list(r.types)
            if r.reltuples >= 0:
                d["reltuples"] = r.reltuples
            if r.depends_on:
                d["depends_on"] = list(r.depends_on)
            if r.parents:
                d["parents"] = list(r.parents)
            if r.definition:
                d["definition"] = r.definition
            if r.options:
                d["options"] = list(r.options)
            rels.append(d)
        funcs = [f"{s}.{n}" for n, ss in sorted(self.functions.items()) for s in ss]
        return {
            "relations": rels,
            "functions": funcs,
            "schemas": list(self.schemas),
            "search_path": list(self.search_path),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Catalog:
        """Read the schema-file shape: relations (or tables + views), functions, schemas."""
        rels: dict[str, Relation] = {}
        items = list(data.get("relations", []))
        items += [dict(t, kind=t.get("kind", "table")) for t in data.get("tables", [])]
        items += [dict(v, kind=v.get("kind", "view")) for v in data.get("views", [])]
        for item in items:
            schema, name = _split(item)
            rel = Relation(
                schema=schema,
                name=name,
                kind=str(item.get("kind", "table")),
                columns=tuple(str(c) for c in item.get("columns", [])),
                types=tuple(str(t or "") for t in item.get("types", [])),
                reltuples=float(item.get("reltuples", -1)),
                depends_on=tuple(_qual(x) for x in item.get("depends_on", [])),
                parents=tuple(_qual(x) for x in item.get("parents", [])),
                definition=str(item.get("definition") or ""),
                options=tuple(str(o) for o in item.get("options", [])),
            )
            rels[rel.qualified] = rel
        funcs: dict[str, list[str]] = {}
        for f in data.get("functions", []):
            schema, _, name = _qual(f).partition(".")
            funcs.setdefault(name, []).append(schema)
        schemas = tuple(data.get("schemas") or sorted({r.schema for r in rels.values()}))
        path = tuple(str(p) for p in data.get("search_path") or ("$user", "public"))
        return cls(rels, {k: tuple(v) for k, v in funcs.items()}, schemas, search_path=path)

    @classmethod
    def from_file(cls, path: str | Path) -> Catalog:
        text = Path(path).read_text(encoding="utf-8")
        data = orjson.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a schema file is a mapping with `relations:`")
        return cls.from_dict(data)

    def to_file(self, path: str | Path) -> None:
        data = self.to_dict()
        if str(path).endswith(".json"):
            Path(path).write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        else:
            Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _qual(name: Any) -> str:
    text = str(name)
    return text if "." in text else f"public.{text}"


def _split(item: dict[str, Any]) -> tuple[str, str]:
    if "schema" in item:
        return str(item["schema"]), str(item["name"])
    schema, _, name = _qual(item["name"]).partition(".")
    return schema, name


_RELATIONS_SQL = """
SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS relkind, c.reltuples,
       c.oid::int8 AS oid,
       coalesce(array_agg(a.attname ORDER BY a.attnum)
                FILTER (WHERE a.attnum > 0 AND NOT a.attisdropped), '{}') AS columns,
       coalesce(array_agg(a.attnum::int ORDER BY a.attnum)
                FILTER (WHERE a.attnum > 0 AND NOT a.attisdropped), '{}') AS attnums,
       coalesce(array_agg(CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace
                               THEN t.typname::text ELSE '' END ORDER BY a.attnum)
                FILTER (WHERE a.attnum > 0 AND NOT a.attisdropped), '{}') AS types
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid
LEFT JOIN pg_type t ON t.oid = a.atttypid
WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'
GROUP BY 1, 2, 3, 4, 5
"""

# Run under `SET search_path = ''`, so pg_get_viewdef qualifies every name
# outside pg_catalog and the text means the same under any session's path.
_VIEWDEFS_SQL = """
SELECT n.nspname AS schema, c.relname AS name, pg_get_viewdef(c.oid) AS definition,
       coalesce(c.reloptions, '{}') AS options
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'v'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_temp%'
"""

# Direct dependencies of views and materialized views on other relations (via their rewrite rule).
_VIEW_DEPS_SQL = """
SELECT DISTINCT vn.nspname AS vschema, v.relname AS vname, tn.nspname AS tschema, t.relname AS tname
FROM pg_rewrite r
JOIN pg_class v ON v.oid = r.ev_class
JOIN pg_namespace vn ON vn.oid = v.relnamespace
JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass
                 AND d.refclassid = 'pg_class'::regclass
JOIN pg_class t ON t.oid = d.refobjid AND t.oid <> v.oid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE v.relkind IN ('v', 'm')
"""

_INHERITS_SQL = """
SELECT cn.nspname AS cschema, c.relname AS cname, pn.nspname AS pschema, p.relname AS pname
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
"""

# The stored query of each view and matview, for its columns' origins.
_VIEW_TREES_SQL = """
SELECT n.nspname AS schema, c.relname AS name, r.ev_action::text AS tree
FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND r.rulename = '_RETURN'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_temp%'
"""

_FUNCTIONS_SQL = """
SELECT DISTINCT n.nspname AS schema, p.proname AS name
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
"""

_KINDS = {"r": "table", "v": "view", "m": "matview", "f": "foreign", "p": "partitioned"}


def _origins(tree: str | None) -> tuple[tuple[int, int, int], ...]:
    if not tree:
        return ()
    return tuple(sorted((att, tbl, col) for att, (tbl, col) in view_origins(tree).items()))


def _closure(direct: dict[str, set[str]]) -> dict[str, tuple[str, ...]]:
    """Transitive closure, so a view over a view over a table lists the table."""
    out: dict[str, tuple[str, ...]] = {}
    for start in direct:
        seen: set[str] = set()
        todo = list(direct[start])
        while todo:
            x = todo.pop()
            if x not in seen:
                seen.add(x)
                todo.extend(direct.get(x, ()))
        out[start] = tuple(sorted(seen))
    return out


async def load_catalog(dsn: str, database: str | None = None) -> Catalog:
    """Read the schema snapshot from the upstream (needs no table privileges).

    `database` overrides the DSN's database (catalogs are per database).
    """
    import asyncpg  # late: unit tests and `explain --schema` never need a driver

    conn = await asyncpg.connect(dsn, database=database) if database else await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(_RELATIONS_SQL)
        deps = await conn.fetch(_VIEW_DEPS_SQL)
        inh = await conn.fetch(_INHERITS_SQL)
        trees = {f"{t['schema']}.{t['name']}": t["tree"] for t in await conn.fetch(_VIEW_TREES_SQL)}
        funcs = await conn.fetch(_FUNCTIONS_SQL)
        schemas = await conn.fetch("SELECT nspname FROM pg_namespace ORDER BY 1")
        path_text = await conn.fetchval("SELECT current_setting('search_path')")
        await conn.execute("SET search_path = ''")
        viewdefs = {f"{v['schema']}.{v['name']}": v for v in await conn.fetch(_VIEWDEFS_SQL)}
    finally:
        await conn.close()
    direct_deps: dict[str, set[str]] = {}
    for d in deps:
        direct_deps.setdefault(f"{d['vschema']}.{d['vname']}", set()).add(
            f"{d['tschema']}.{d['tname']}"
        )
    direct_parents: dict[str, set[str]] = {}
    for i in inh:
        direct_parents.setdefault(f"{i['cschema']}.{i['cname']}", set()).add(
            f"{i['pschema']}.{i['pname']}"
        )
    all_deps, all_parents = _closure(direct_deps), _closure(direct_parents)
    rels: dict[str, Relation] = {}
    for r in rows:
        q = f"{r['schema']}.{r['name']}"
        vd = viewdefs.get(q)
        rels[q] = Relation(
            schema=r["schema"],
            name=r["name"],
            kind=_KINDS.get(r["relkind"], "table"),
            columns=tuple(r["columns"]),
            types=tuple(r["types"]),
            reltuples=float(r["reltuples"]),
            depends_on=all_deps.get(q, ()),
            parents=all_parents.get(q, ()),
            definition=str(vd["definition"] or "") if vd else "",
            options=tuple(vd["options"]) if vd else (),
            oid=int(r["oid"]),
            attnums=tuple(r["attnums"]),
            origins=_origins(trees.get(q)),
        )
    fmap: dict[str, list[str]] = {}
    for f in funcs:
        fmap.setdefault(f["name"], []).append(f["schema"])
    functions = {k: tuple(sorted(v)) for k, v in fmap.items()}
    path = tuple(parse_search_path(str(path_text or "")))
    return Catalog(rels, functions, tuple(s[0] for s in schemas), search_path=path)
