"""A media process shared by the media tests: small pattern frames keep decoding cheap."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Api, Proc

#: Small, fast test-pattern frames: five decoding viewers fit on a 2-core machine.
MEDIA_ENV = {
    "LIVEROOM_MEDIA_WIDTH": "320",
    "LIVEROOM_MEDIA_HEIGHT": "240",
    "LIVEROOM_MEDIA_FPS": "30",
    "LIVEROOM_MEDIA_BITRATE": "500000",
    "LIVEROOM_MEDIA_IDLE_STOP_S": "1",
    "LIVEROOM_MEDIA_MAX_SESSIONS_PER_USER": "3",
}


@pytest.fixture(scope="session")
def media_proc(redis_url: str, tmp_root: Path) -> Iterator[Proc]:
    """`liveroom serve --role media`: WHEP/WHIP plus the HTTP API on one port."""
    p = Proc(redis_url, "media", tmp_root, env=MEDIA_ENV)
    yield p
    p.stop()


@pytest.fixture(scope="session")
def media_api(media_proc: Proc) -> Api:
    return Api(media_proc.http_url)
