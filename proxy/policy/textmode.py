"""Session settings that change how PostgreSQL reads statement text.

The proxy reads every statement as UTF-8 text, tokenized as PostgreSQL does
with standard_conforming_strings on. With that setting off, `'\\'` no
longer ends a string for the server; with another client encoding the
server converts the bytes first, so a non-ASCII name can mean one table to
the rules and another to the server, and in SJIS, BIG5, GBK and the like a
quote byte can hide inside a character. Either way text the proxy read one
way runs another, so such settings are refused wherever the proxy sees
them: SET, set_config(), the startup parameters, and every ParameterStatus
the server reports.
"""

from __future__ import annotations

import re

# UTF-8 under PostgreSQL's names for it; SQL_ASCII converts nothing (the server
# checks the bytes against the database encoding); DEFAULT is reported back by
# the server as the encoding it stands for, and judged then.
_SAFE_ENCODINGS = frozenset({"utf8", "unicode", "sqlascii", "default"})
_ON = frozenset({"on", "true", "yes", "1"})


def parser_hazard(name: str, value: str) -> str | None:
    """Why setting `name` to `value` would split the proxy's reading from the server's."""
    name, value = name.strip().lower(), value.strip().strip("'\"").lower()
    if name == "standard_conforming_strings" and value not in _ON:
        return "standard_conforming_strings must stay on behind the proxy"
    # PostgreSQL compares encoding names in lower case, letters and digits only.
    if name in ("client_encoding", "names") and re.sub(r"[^a-z0-9]", "", value) not in (
        _SAFE_ENCODINGS
    ):
        return f"client_encoding {value!r} is not supported by the proxy"
    return None
