"""docs/security.md states the code's defaults: every setting it names, with its value."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from engine.settings import Settings, _convert

DOC = Path(__file__).resolve().parents[1] / "docs" / "security.md"
ROW = re.compile(r"^\| `LIVEROOM_([A-Z_]+)` \| `([^`]*)` \|", re.M)


def test_every_setting_in_the_limits_table_has_the_codes_default() -> None:
    rows = ROW.findall(DOC.read_text())
    assert len(rows) >= 25
    defaults = {f.name: getattr(Settings(), f.name) for f in fields(Settings)}
    for name, shown in rows:
        field = name.lower()
        assert field in defaults, f"docs/security.md names LIVEROOM_{name}, which is no setting"
        want = defaults[field]
        got = "" if shown == '""' else _convert(shown, type(want))
        assert got == want, f"LIVEROOM_{name}: the doc says {shown}, the code has {want!r}"


def test_every_limit_setting_is_in_the_table() -> None:
    named = {n.lower() for n, _ in ROW.findall(DOC.read_text())}
    limits = {
        f.name
        for f in fields(Settings)
        if f.name.startswith(("max_", "msg_", "danmaku_", "like_", "bad_message"))
        or f.name.endswith(("_timeout_s", "_limit", "_exempt", "_origins"))
    }
    assert limits - named == set()
