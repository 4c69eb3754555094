"""The settings reference (README, docs/settings.md) is generated from the model: keep in step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.cli import main
from proxy.settings import Settings, settings_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("doc", ["README.md", "docs/settings.md"])
def test_settings_table_matches_the_model(doc: str) -> None:
    text = (ROOT / doc).read_text()
    m = re.search(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", text, re.S)
    assert m is not None, f"{doc} lost its settings-table markers"
    assert m.group(1) == settings_table(), (
        f"{doc} settings table is stale: paste proxy.settings.settings_table()"
    )


def test_every_setting_is_documented() -> None:
    missing = [n for n, f in Settings.model_fields.items() if not f.description]
    assert missing == []


def test_serve_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    """DESIGN.md: the settings reference is also `oversight serve --help`."""
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    missing = [n for n in Settings.model_fields if f"  {n} (OVERSIGHT_{n.upper()}, " not in out]
    assert missing == []
