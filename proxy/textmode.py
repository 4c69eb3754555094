"""Session settings that change how PostgreSQL reads statement text.

The proxy reads every statement as PostgreSQL does with
standard_conforming_strings on, after decoding it from the client encoding
with a codec that reads every byte sequence as the server does (see
`encodings.py`). With standard_conforming_strings off, `'\\'` no longer
ends a string for the server; with a client encoding the proxy has no exact
codec for, a non-ASCII name can mean one table to the rules and another to
the server, and in a multibyte encoding a quote byte can hide inside a
character. Either way text the proxy read one way would run another, so
such settings are refused wherever the proxy sees them: SET, set_config(),
the startup parameters, and every ParameterStatus the server reports.
Changing to an encoding the proxy reads exactly is allowed.
"""

from __future__ import annotations

from proxy.encodings import refusal

_ON = frozenset({"on", "true", "yes", "1"})


def parser_hazard(name: str, value: str) -> str | None:
    """Why setting `name` to `value` would split the proxy's reading from the server's."""
    name, value = name.strip().lower(), value.strip().strip("'\"")
    if name == "standard_conforming_strings" and value.lower() not in _ON:
        return "standard_conforming_strings must stay on behind the proxy"
    if name in ("client_encoding", "names"):
        return refusal(value)
    return None
