"""The README's settings reference is generated from the settings model: keep them in step."""

from __future__ import annotations

import re
from pathlib import Path

from proxy.settings import Settings, settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_matches_the_model() -> None:
    text = README.read_text()
    m = re.search(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", text, re.S)
    assert m is not None, "README lost its settings-table markers"
    assert m.group(1) == settings_table(), (
        "README settings table is stale: paste proxy.settings.settings_table()"
    )


def test_every_setting_is_documented() -> None:
    missing = [n for n, f in Settings.model_fields.items() if not f.description]
    assert missing == []
