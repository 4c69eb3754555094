"""One address parser for every listen setting: what it accepts, what it refuses, who uses it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy.address import parse_address, parse_optional_address
from proxy.settings import Settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:6432", ("127.0.0.1", 6432)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:9187", ("localhost", 9187)),
        ("db-proxy.internal.example:5432", ("db-proxy.internal.example", 5432)),
        (":9187", ("127.0.0.1", 9187)),
        ("[::1]:6432", ("::1", 6432)),
        ("[::]:6432", ("::", 6432)),
        (" 127.0.0.1:1 ", ("127.0.0.1", 1)),
    ],
)
def test_accepted_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0.0.0.0", "no port"),
        ("localhost", "no port"),
        ("6432", "no port"),
        ("", "no port"),
        ("::1", "write an IPv6 host as [::1]:port"),
        ("::1:6432", "IPv6"),
        ("[::1]", "use [v6]:port"),
        ("[::1]6432", "use [v6]:port"),
        ("[nohost]:1", "bad host"),
        ("127.0.0.1:", "bad port"),
        ("127.0.0.1:-1", "bad port"),
        ("127.0.0.1:http", "bad port"),
        ("127.0.0.1:70000", "port out of range"),
        ("bad host:1", "bad host"),
        ("under_score:1", "bad host"),
        ("-leading:1", "bad host"),
    ],
)
def test_refused_forms(text: str, says: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_address(text)
    assert says in str(e.value)


def test_empty_means_off_only_where_allowed() -> None:
    assert parse_optional_address("") is None
    assert parse_optional_address("  ") is None
    assert parse_optional_address(":1") == ("127.0.0.1", 1)
    with pytest.raises(ValueError, match="no port"):
        parse_optional_address("0.0.0.0")


@pytest.mark.parametrize("field", ["listen", "admin_listen"])
@pytest.mark.parametrize("bad", ["0.0.0.0", "::1", "[::1]", "host:99999"])
def test_settings_refuse_what_the_listeners_could_not_use(field: str, bad: str) -> None:
    with pytest.raises(ValidationError) as e:
        Settings.model_validate({field: bad})
    assert e.value.errors()[0]["loc"] == (field,)


def test_settings_addresses_are_the_parsers() -> None:
    s = Settings.model_validate({"listen": "[::1]:7000", "admin_listen": ""})
    assert s.listen_address == ("::1", 7000)
    assert s.admin_address is None
    with pytest.raises(ValidationError):
        Settings.model_validate({"listen": ""})  # the proxy's own listener cannot be off
