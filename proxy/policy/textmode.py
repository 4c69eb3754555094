"""Session settings that change how PostgreSQL reads statement text.

The proxy tokenizes every statement as PostgreSQL does with
standard_conforming_strings on and an ASCII-safe client encoding. With
standard_conforming_strings off, or a client-only encoding (SJIS, BIG5,
GBK, UHC, GB18030, JOHAB) whose multi-byte characters may end in a quote
or backslash byte, the two disagree about where a string literal ends, and
text the proxy read as a literal runs as SQL. So such settings are refused
wherever the proxy sees them: SET, set_config(), the startup parameters,
and every ParameterStatus the server reports.
"""

from __future__ import annotations

import re

# The server encodings (every one ASCII-safe) under PostgreSQL's names and
# aliases, compared as PostgreSQL does: lower case, letters and digits only.
_SAFE_ENCODING = re.compile(
    r"(sqlascii|utf8|unicode|euc(jp|cn|kr|tw|jis2004)|muleinternal|latin([1-9]|10)"
    r"|iso8859(1[0-6]|[1-9])|win(125[0-8]|866|874)|koi8[ru]?|alt|tcvn(5712)?|vscii|default)"
)
_ON = frozenset({"on", "true", "yes", "1"})


def parser_hazard(name: str, value: str) -> str | None:
    """Why setting `name` to `value` would split the proxy's reading from the server's."""
    name, value = name.strip().lower(), value.strip().strip("'\"").lower()
    if name == "standard_conforming_strings" and value not in _ON:
        return "standard_conforming_strings must stay on behind the proxy"
    if name in ("client_encoding", "names"):
        clean = re.sub(r"[^a-z0-9]", "", value)
        if not _SAFE_ENCODING.fullmatch(clean):
            return f"client_encoding {value!r} is not supported by the proxy"
    return None
