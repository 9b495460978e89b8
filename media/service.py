"""Placeholder until the media work lands: the media role refuses to start."""

from __future__ import annotations

from typing import Any


class MediaService:
    def __init__(self, settings: Any, redis: Any) -> None:
        raise RuntimeError("the media role (WHEP/WHIP) is not built yet")
