"""Built-ins and catalog relations that read data past the rewrite, for users with a policy.

A row filter is only as good as the parser's view of what a statement reads.
These functions run SQL given as a string (out of the parser's sight), reach
files, other databases or large objects, or change name resolution behind the
engine's back; these relations hold column values (planner statistics) or
other sessions' statement text. A `functions:` rule can allow any of them.
"""

from __future__ import annotations

import re

from proxy.textmode import parser_hazard

# Exact pg_catalog names (compared lower case).
DANGEROUS = frozenset(
    {
        # run a query from a string
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "table_to_xml",
        "table_to_xmlschema",
        "table_to_xml_and_xmlschema",
        "schema_to_xml",
        "schema_to_xmlschema",
        "schema_to_xml_and_xmlschema",
        "database_to_xml",
        "database_to_xmlschema",
        "database_to_xml_and_xmlschema",
        "ts_stat",  # ts_stat('SELECT ...') runs its argument
        "ts_rewrite",  # ts_rewrite(query, 'SELECT ...') too
        # files and the server
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "pg_ls_logdir",
        "pg_ls_waldir",
        "pg_ls_tmpdir",
        "pg_ls_archive_statusdir",
        "pg_ls_logicalsnapdir",
        "pg_ls_logicalmapdir",
        "pg_ls_replslotdir",
        "pg_current_logfile",
        # large objects
        "loread",
        "lowrite",
        # other sessions' statement text and the statistics that hold values
        "pg_stat_get_activity",
        "pg_stat_get_backend_activity",
        "pg_stat_statements",
        "pg_mcv_list_items",
        # replication slots decode every table's changes
        "pg_logical_slot_get_changes",
        "pg_logical_slot_peek_changes",
        "pg_logical_slot_get_binary_changes",
        "pg_logical_slot_peek_binary_changes",
    }
)
# Prefix families: dblink*, lo_* (lo_import, lo_export, lo_get...), adminpack's pg_file_*.
_DANGEROUS_PREFIX = re.compile(r"^(dblink|lo_|pg_file_|pg_logdir_)")

# Reading these relations reveals column values or others' SQL: blocked outright.
SIDE_CHANNEL_RELATIONS = frozenset(
    {
        "pg_catalog.pg_statistic",
        "pg_catalog.pg_statistic_ext_data",
        "pg_catalog.pg_stats",
        "pg_catalog.pg_stats_ext",
        "pg_catalog.pg_stats_ext_exprs",
        "pg_catalog.pg_largeobject",
    }
)
# Extension views, in whatever schema the extension was installed.
SIDE_CHANNEL_NAMES = frozenset({"pg_stat_statements", "pg_stat_statements_info"})
# Relations that are fine except for some columns (other sessions' query text).
SIDE_CHANNEL_COLUMNS = {
    "pg_catalog.pg_stat_activity": frozenset({"query"}),
}


# Built-in helpers of the information_schema views, which drivers call directly
# for metadata (pgjdbc's getPrimaryKeys uses _pg_expandarray): catalog reads only.
INFORMATION_SCHEMA_HELPERS = frozenset(
    {
        "_pg_expandarray",
        "_pg_index_position",
        "_pg_truetypid",
        "_pg_truetypmod",
        "_pg_char_max_length",
        "_pg_char_octet_length",
        "_pg_numeric_precision",
        "_pg_numeric_precision_radix",
        "_pg_numeric_scale",
        "_pg_datetime_precision",
        "_pg_interval_type",
    }
)


def dangerous(name: str, args: list[str | None]) -> str | None:
    """Why calling pg_catalog function `name` with these literal args escapes policy, or None.

    `args` holds each argument's literal text, or None when it is not a literal.
    """
    n = name.lower()
    if n == "set_config":
        first = args[0].lower() if args and args[0] is not None else None
        if first is None or first.strip() == "search_path":
            return "set_config on search_path moves name resolution behind the proxy's back"
        if first.strip() in ("standard_conforming_strings", "client_encoding"):
            value = args[1] if len(args) > 1 else None
            if value is None:
                return f"set_config on {first.strip()} with a computed value"
            return parser_hazard(first, value)
        return None
    if n in DANGEROUS or _DANGEROUS_PREFIX.match(n):
        return f"{n}() reads data outside the tables the proxy can police"
    return None


def side_channel(qualified: str) -> str | None:
    if qualified in SIDE_CHANNEL_RELATIONS:
        return f"{qualified} holds column values of other tables"
    if qualified.split(".", 1)[-1] in SIDE_CHANNEL_NAMES:
        return f"{qualified} holds other sessions' statement text"
    return None
