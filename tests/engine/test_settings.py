"""engine/settings.py: safe defaults, the refusal of the dev secret, the environment."""

from __future__ import annotations

import dataclasses
import os

import pytest

from engine.errors import LiveroomError
from engine.settings import DEV_SECRET, MediaSettings, Settings

GOOD_SECRET = "a-real-secret-0123456789"


def test_default_secret_is_refused_outside_dev_mode() -> None:
    with pytest.raises(LiveroomError, match="default token secret"):
        Settings().check()


def test_default_secret_is_allowed_in_dev_mode() -> None:
    s = Settings(dev=True)
    assert s.check() is s
    assert s.secret == DEV_SECRET


def test_a_real_secret_passes() -> None:
    s = Settings(secret=GOOD_SECRET)
    assert s.check() is s


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"secret": "short"}, "at least 16"),
        ({"secret": GOOD_SECRET, "token_leeway_s": 6}, "leeway"),
        ({"secret": GOOD_SECRET, "token_leeway_s": -1}, "leeway"),
        ({"secret": GOOD_SECRET, "tick_ms": 0}, "tick_ms"),
        ({"secret": GOOD_SECRET, "workers": 0}, "workers"),
        ({"secret": GOOD_SECRET, "ws_backlog": 0}, "ws_backlog"),
        ({"secret": GOOD_SECRET, "ws_backlog": 70_000}, "ws_backlog"),
        ({"secret": GOOD_SECRET, "draw_processes": -1}, "draw_processes"),
        ({"secret": GOOD_SECRET, "draw_processes": 17}, "draw_processes"),
    ],
)
def test_unsafe_settings_are_refused(changes: dict, says: str) -> None:
    with pytest.raises(LiveroomError, match=says):
        Settings(**changes).check()


def test_protocol_defaults() -> None:
    s = Settings()
    assert s.token_leeway_s <= 5
    assert s.max_message_bytes == 64 * 1024
    assert s.max_conns_per_user == 5
    assert (s.bad_message_limit, s.bad_message_window_s) == (10, 10.0)
    assert s.danmaku_max_chars == 200
    assert (s.history_keep_events, s.history_keep_seconds) == (10_000, 600)
    assert not s.dev


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().tick_ms = 5  # type: ignore[misc]


def test_with_ignores_none() -> None:
    s = Settings().with_(tick_ms=20, ws_port=None)
    assert s.tick_ms == 20 and s.ws_port == Settings().ws_port


# -- from_env ----------------------------------------------------------------------------------


def test_from_env_reads_typed_fields() -> None:
    s = Settings.from_env(
        {
            "LIVEROOM_TICK_MS": "20",
            "LIVEROOM_SECRET": GOOD_SECRET,
            "LIVEROOM_DEV": "true",
            "LIVEROOM_DANMAKU_RATE": "3.5",
            "LIVEROOM_HOST": "0.0.0.0",
            "LIVEROOM_HISTORY_KEEP_EVENTS": "500",
            "UNRELATED": "x",
        }
    )
    assert s.tick_ms == 20 and isinstance(s.tick_ms, int)
    assert s.secret == GOOD_SECRET
    assert s.dev is True
    assert s.danmaku_rate == 3.5 and isinstance(s.danmaku_rate, float)
    assert s.host == "0.0.0.0"
    assert s.history_keep_events == 500
    assert s.ws_port == Settings().ws_port  # untouched fields keep their defaults


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("yes", True), ("ON", True), ("0", False), ("false", False), ("", False)],
)
def test_from_env_booleans(raw: str, value: bool) -> None:
    assert Settings.from_env({"LIVEROOM_DEV": raw}).dev is value


def test_from_env_reads_redis_url() -> None:
    assert Settings.from_env({"REDIS_URL": "redis://r:1/2"}).redis_url == "redis://r:1/2"
    # LIVEROOM_REDIS_URL is the more specific name and wins
    s = Settings.from_env({"REDIS_URL": "redis://r:1/2", "LIVEROOM_REDIS_URL": "redis://l:3/4"})
    assert s.redis_url == "redis://l:3/4"
    assert Settings.from_env({"REDIS_URL": ""}).redis_url == Settings().redis_url


def test_from_env_with_empty_environ_is_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_overrides_win_over_the_environment() -> None:
    env = {"LIVEROOM_TICK_MS": "20", "REDIS_URL": "redis://env:1/0"}
    s = Settings.from_env(env, tick_ms=7, redis_url="redis://flag:2/0", ws_port=None)
    assert s.tick_ms == 7 and s.redis_url == "redis://flag:2/0"
    assert s.ws_port == Settings().ws_port


def test_from_env_reads_only_the_environment_it_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIVEROOM_TICK_MS", "33")
    monkeypatch.setenv("LIVEROOM_MEDIA_FPS", "24")
    assert Settings.from_env({}) == Settings()
    s = Settings.from_env(os.environ)
    assert s.tick_ms == 33 and s.media.fps == 24
    with pytest.raises(TypeError):
        Settings.from_env()  # type: ignore[call-arg]  # the edge must name the environment


def test_from_env_secret_then_check() -> None:
    Settings.from_env({"LIVEROOM_SECRET": GOOD_SECRET}).check()
    with pytest.raises(LiveroomError):
        Settings.from_env({}).check()


# -- the media role's part -------------------------------------------------------------------


def test_media_settings_are_nested_frozen_and_default() -> None:
    s = Settings()
    assert s.media == MediaSettings()
    assert (s.media.width, s.media.height, s.media.fps) == (1280, 720, 30)
    assert s.media.max_sdp_bytes == 64 * 1024
    assert s.media.codec_list() == ("H264", "VP8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.media.fps = 5  # type: ignore[misc]


def test_from_env_reads_media_fields_into_settings_media() -> None:
    s = Settings.from_env(
        {
            "LIVEROOM_MEDIA_WIDTH": "320",
            "LIVEROOM_MEDIA_KEYFRAME_INTERVAL_S": "2",
            "LIVEROOM_MEDIA_SHARED_ENCODER": "0",
            "LIVEROOM_MEDIA_CODECS": "vp8",
            "LIVEROOM_MEDIA_ICE_SERVERS": "stun:stun.example:3478",
            "LIVEROOM_TICK_MS": "20",
        }
    )
    m = s.media
    assert m.width == 320 and isinstance(m.width, int)
    assert m.keyframe_interval_s == 2.0 and isinstance(m.keyframe_interval_s, float)
    assert m.shared_encoder is False
    assert m.codec_list() == ("VP8",)
    assert m.ice_servers == "stun:stun.example:3478"
    assert m.height == MediaSettings().height  # untouched fields keep their defaults
    assert s.tick_ms == 20


def test_a_media_override_wins_over_the_environment() -> None:
    mine = MediaSettings(fps=15)
    assert Settings.from_env({"LIVEROOM_MEDIA_FPS": "24"}, media=mine).media is mine


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"codecs": "AV1"}, "codecs"),
        ({"codecs": " , "}, "codecs"),
        ({"fps": 0}, "fps"),
        ({"fps": 61}, "fps"),
        ({"width": 321}, "even"),
        ({"width": 8}, "even"),
        ({"keyframe_interval_s": 0.1}, "keyframe"),
        ({"viewer_queue_frames": 1}, "viewer queue"),
    ],
)
def test_unusable_media_settings_are_refused(changes: dict, says: str) -> None:
    with pytest.raises(LiveroomError, match=says):
        MediaSettings(**changes).check()
    m = MediaSettings()
    assert m.check() is m


def test_gop_frames() -> None:
    assert MediaSettings(fps=30, keyframe_interval_s=1.0).gop_frames == 30
    assert MediaSettings(fps=25, keyframe_interval_s=2.0).gop_frames == 50
