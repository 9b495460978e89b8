"""engine/settings.py: safe defaults, the refusal of the dev secret, the environment."""

from __future__ import annotations

import dataclasses

import pytest

from engine.errors import LiveroomError
from engine.settings import DEV_SECRET, Settings

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


def test_from_env_does_not_read_the_process_environment_when_given_a_dict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIVEROOM_TICK_MS", "33")
    assert Settings.from_env({}).tick_ms == Settings().tick_ms
    assert Settings.from_env().tick_ms == 33


def test_from_env_secret_then_check() -> None:
    Settings.from_env({"LIVEROOM_SECRET": GOOD_SECRET}).check()
    with pytest.raises(LiveroomError):
        Settings.from_env({}).check()
