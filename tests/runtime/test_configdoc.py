"""docs/configuration.md is the settings dataclasses, field for field."""

from __future__ import annotations

from dataclasses import fields

from engine.settings import MediaSettings, Settings
from runtime import configdoc


def test_the_configuration_page_matches_the_settings() -> None:
    page = configdoc.PAGE.read_text("utf-8")
    assert page == configdoc.render(), "run `python -m runtime.configdoc --write`"


def test_every_setting_is_on_the_page_with_its_text() -> None:
    page = configdoc.PAGE.read_text("utf-8")
    for cls, prefix in ((Settings, "LIVEROOM_"), (MediaSettings, "LIVEROOM_MEDIA_")):
        docs = configdoc.field_docs(cls)
        for f in fields(cls):
            if f.name == "media":
                continue
            assert f"`{prefix}{f.name.upper()}`" in page
            assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"
