"""engine/bus.py against a real Redis: publishing, replay, retention, and the room reader.

The redis-server is shared by the whole session: never flush it, use unique room ids.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest
from redis.asyncio import Redis

from engine import keys
from engine.bus import RoomBus, RoomReader, StreamHead
from engine.codec import Event
from engine.ids import ZERO_ID, EventId, RoomId, stream_id_key
from engine.settings import Settings
from engine.store import connect, is_cluster
from tests.support import unique

KEEP_ALL = Settings(history_keep_events=10_000, history_keep_seconds=600)


def _room() -> RoomId:
    return RoomId(unique("bus"))


def _notice(i: int) -> Event:
    return {"type": "notice", "text": f"n{i}"}


async def _publish_many(bus: RoomBus, room: RoomId, n: int) -> list[EventId]:
    return [await bus.publish(room, _notice(i)) for i in range(n)]


# -- publish and replay ------------------------------------------------------------------------


async def test_publish_returns_increasing_ids(redis: Redis) -> None:
    bus, room = RoomBus(redis, KEEP_ALL), _room()
    ids = await _publish_many(bus, room, 20)
    assert all(isinstance(i, str) for i in ids)
    keys_ = [stream_id_key(i) for i in ids]
    assert keys_ == sorted(keys_) and len(set(keys_)) == 20
    assert stream_id_key(ids[0]) > (0, 0)


async def test_publish_once_publishes_a_ref_once_and_answers_the_same_id(redis: Redis) -> None:
    bus, room = RoomBus(redis, KEEP_ALL), _room()
    first, fresh = await bus.publish_once(room, _notice(1), "u1", "r1")
    again, fresh_again = await bus.publish_once(room, _notice(1), "u1", "r1")
    assert fresh and not fresh_again and again == first
    other_user, _ = await bus.publish_once(room, _notice(2), "u2", "r1")  # refs are per user
    other_ref, _ = await bus.publish_once(room, _notice(3), "u1", "r2")
    assert len({first, other_user, other_ref}) == 3
    assert await redis.xlen(keys.events(room)) == 3
    ttl = await redis.ttl(keys.danmaku_ref(room, "u1", "r1"))
    assert 590 <= ttl <= 600  # remembered 10 minutes (PROTOCOL.md §4)


async def test_after_returns_events_in_order_with_ids(redis: Redis) -> None:
    bus, room = RoomBus(redis, KEEP_ALL), _room()
    event = {"type": "danmaku", "user": {"id": "u1", "name": "李"}, "text": "好!", "ts": 1.5}
    ids = [await bus.publish(room, event)] + await _publish_many(bus, room, 9)

    everything = await bus.after(room, ZERO_ID, 100)
    assert [e["id"] for e in everything] == ids
    assert everything[0] == {**event, "id": ids[0]}  # stored and read back unchanged
    assert [e["text"] for e in everything[1:]] == [f"n{i}" for i in range(9)]

    later = await bus.after(room, ids[4], 100)  # strictly after
    assert [e["id"] for e in later] == ids[5:]
    assert [e["id"] for e in await bus.after(room, ids[4], 2)] == ids[5:7]  # count
    assert await bus.after(room, ids[-1], 100) == []


async def test_after_on_an_empty_room_is_empty(redis: Redis) -> None:
    assert await RoomBus(redis, KEEP_ALL).after(_room(), ZERO_ID, 10) == []


async def test_head_of_an_empty_room(redis: Redis) -> None:
    head = await RoomBus(redis, KEEP_ALL).head(_room())
    assert head == StreamHead(last_id=ZERO_ID, first_id=None, complete=True)
    assert head.last_id == "0-0"
    assert head.can_resume_after(ZERO_ID)
    assert not head.can_resume_after(EventId("1-0"))  # nothing was ever written: from the future


async def test_head_of_an_untrimmed_room(redis: Redis) -> None:
    bus, room = RoomBus(redis, KEEP_ALL), _room()
    ids = await _publish_many(bus, room, 3)
    head = await bus.head(room)
    assert head.last_id == ids[-1] and head.first_id == ids[0] and head.complete
    assert all(head.can_resume_after(i) for i in [ZERO_ID, *ids])


# -- retention ---------------------------------------------------------------------------------


def _stream_len(redis: Redis, room: RoomId):
    return redis.xlen(keys.events(room))


async def test_count_rule_trims_to_keep_events_and_never_below(redis: Redis) -> None:
    # keep_seconds=0: only the count rule holds events. Publishing 2 ms apart puts every entry
    # in a millisecond of its own, so each publish can trim the oldest entry.
    bus, room = RoomBus(redis, Settings(history_keep_events=5, history_keep_seconds=0)), _room()
    ids: list[EventId] = []
    for i in range(50):
        ids.append(await bus.publish(room, _notice(i)))
        assert await _stream_len(redis, room) == min(i + 1, 5)
        await asyncio.sleep(0.002)
    retained = await bus.after(room, ZERO_ID, 100)
    assert [e["id"] for e in retained] == ids[-5:]

    head = await bus.head(room)
    assert head.last_id == ids[-1] and head.first_id == ids[-5] and not head.complete
    assert not head.can_resume_after(ids[0])  # long trimmed
    assert not head.can_resume_after(ZERO_ID)
    assert not head.can_resume_after(ids[-7])
    assert head.can_resume_after(ids[-5])
    assert head.can_resume_after(ids[-2])
    assert head.can_resume_after(ids[-1])


async def test_count_rule_under_a_burst_trims_to_about_keep_events(redis: Redis) -> None:
    # Back to back, several entries share a millisecond; those in the current millisecond are
    # not yet older than 0 s, so a few more than 5 may remain, but never fewer.
    bus, room = RoomBus(redis, Settings(history_keep_events=5, history_keep_seconds=0)), _room()
    ids = await _publish_many(bus, room, 50)
    n = await _stream_len(redis, room)
    assert 5 <= n <= 25
    head = await bus.head(room)
    assert not head.complete
    assert not head.can_resume_after(ids[0])
    assert head.can_resume_after(ids[-3])
    assert [e["id"] for e in await bus.after(room, ids[-3], 10)] == ids[-2:]


async def test_time_rule_keeps_more_than_the_count_rule(redis: Redis) -> None:
    bus, room = RoomBus(redis, Settings(history_keep_events=5, history_keep_seconds=600)), _room()
    ids = await _publish_many(bus, room, 50)
    assert await _stream_len(redis, room) == 50
    head = await bus.head(room)
    assert head.complete and head.first_id == ids[0]
    assert head.can_resume_after(ZERO_ID) and head.can_resume_after(ids[0])
    assert len(await bus.after(room, ids[0], 100)) == 49


async def test_an_id_from_the_future_cannot_be_resumed(redis: Redis) -> None:
    bus, room = RoomBus(redis, KEEP_ALL), _room()
    last = (await _publish_many(bus, room, 3))[-1]
    ms, seq = stream_id_key(last)
    head = await bus.head(room)
    assert head.can_resume_after(last)
    assert not head.can_resume_after(EventId(f"{ms}-{seq + 1}"))
    assert not head.can_resume_after(EventId(f"{ms + 60_000}-0"))


# -- the room reader ---------------------------------------------------------------------------


class _Sink:
    """Collects what the reader hands over; lets a test wait for a number of events."""

    def __init__(self) -> None:
        self.events: dict[RoomId, list[Event]] = defaultdict(list)
        self.calls = 0
        self._changed = asyncio.Event()

    def __call__(self, room: RoomId, events: list[Event]) -> None:
        self.calls += 1
        self.events[room].extend(events)
        self._changed.set()

    async def wait_for(self, room: RoomId, n: int, timeout: float) -> list[Event]:
        deadline = time.monotonic() + timeout
        while len(self.events[room]) < n:
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{room}: {len(self.events[room])} of {n} events")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass
        return self.events[room]


async def _wait_blocked(redis: Redis, name: str, timeout: float = 3.0) -> None:
    """Wait until the connection named ``name`` is blocked in XREAD on the server (on a
    cluster: until the reader's polls have backed off to their longest wait)."""
    if is_cluster(redis):
        await asyncio.sleep(0.2)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in await redis.client_list():
            if c.get("name") == name and c.get("cmd") == "xread" and "b" in c.get("flags", ""):
                return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{name} never blocked in XREAD")


def _reader_client(redis_url: str, name: str) -> Redis:
    """The reader's dedicated client, made as the gateway makes it (no socket timeout: the
    XREAD blocks longer than redis-py's default 5 s timeout), named so CLIENT LIST finds it."""
    client = connect(redis_url, socket_timeout=None, max_connections=4)
    if not is_cluster(client):  # (a cluster's reader polls: nothing blocks there)
        client.connection_pool.connection_kwargs["client_name"] = name
    return client


@pytest.fixture
async def reader_setup(redis: Redis, redis_url: str):
    """A started RoomReader whose XREAD blocks for 10 s (so only a wake-up can be prompt)."""
    name = unique("reader")
    reader_redis = _reader_client(redis_url, name)
    sink = _Sink()
    settings = Settings(read_block_ms=10_000)
    reader = RoomReader(reader_redis, redis, name, sink, settings)
    reader.start()
    try:
        yield reader, sink, name
    finally:
        t0 = time.monotonic()
        await reader.stop()
        assert time.monotonic() - t0 < 2.0  # stopping does not wait out the block
        await reader_redis.aclose()


async def test_reader_delivers_published_events_in_order(redis: Redis, reader_setup) -> None:
    reader, sink, _ = reader_setup
    bus, room = RoomBus(redis, KEEP_ALL), _room()
    head = await bus.head(room)
    assert reader.subscribe(room, head.last_id)
    assert not reader.subscribe(room, head.last_id)  # already read
    assert room in reader.rooms

    ids = [await bus.publish(room, _notice(i)) for i in range(3)]
    got = await sink.wait_for(room, 3, timeout=5)
    assert [e["id"] for e in got] == ids
    assert [e["text"] for e in got] == ["n0", "n1", "n2"]
    await asyncio.sleep(0.05)
    assert len(sink.events[room]) == 3  # no duplicates


async def test_reader_starts_after_the_given_id(redis: Redis, reader_setup) -> None:
    reader, sink, _ = reader_setup
    bus, room = RoomBus(redis, KEEP_ALL), _room()
    old = await _publish_many(bus, room, 4)
    reader.subscribe(room, old[1])
    got = await sink.wait_for(room, 2, timeout=5)
    assert [e["id"] for e in got] == old[2:]


async def test_room_subscribed_while_reading_is_picked_up_promptly(
    redis: Redis, reader_setup
) -> None:
    reader, sink, name = reader_setup
    bus = RoomBus(redis, KEEP_ALL)
    first, second = _room(), _room()
    reader.subscribe(first, (await bus.head(first)).last_id)
    await bus.publish(first, _notice(0))
    await sink.wait_for(first, 1, timeout=5)
    await _wait_blocked(redis, name)  # the reader now waits up to 10 s without `second`

    t0 = time.monotonic()
    reader.subscribe(second, (await bus.head(second)).last_id)
    sid = await bus.publish(second, _notice(1))
    got = await sink.wait_for(second, 1, timeout=3)
    assert time.monotonic() - t0 < 2.0
    assert [e["id"] for e in got] == [sid]


async def test_unsubscribed_room_is_no_longer_delivered(redis: Redis, reader_setup) -> None:
    reader, sink, name = reader_setup
    bus = RoomBus(redis, KEEP_ALL)
    gone, kept = _room(), _room()
    reader.subscribe(gone, (await bus.head(gone)).last_id)
    reader.subscribe(kept, (await bus.head(kept)).last_id)
    await bus.publish(gone, _notice(0))
    await sink.wait_for(gone, 1, timeout=5)
    await _wait_blocked(redis, name)  # this read still names `gone`

    reader.unsubscribe(gone)
    assert gone not in reader.rooms
    await bus.publish(gone, _notice(1))
    sid = await bus.publish(kept, _notice(2))
    assert [e["id"] for e in await sink.wait_for(kept, 1, timeout=5)] == [sid]
    assert len(sink.events[gone]) == 1


async def test_a_failing_callback_does_not_stop_the_reader(redis: Redis, redis_url: str) -> None:
    name = unique("reader")
    reader_redis = _reader_client(redis_url, name)
    sink = _Sink()
    seen: list[RoomId] = []

    def callback(room: RoomId, events: list[Event]) -> None:
        seen.append(room)
        if len(seen) == 1:
            raise RuntimeError("boom")
        sink(room, events)

    reader = RoomReader(reader_redis, redis, name, callback, Settings(read_block_ms=10_000))
    reader.start()
    try:
        bus, room = RoomBus(redis, KEEP_ALL), _room()
        reader.subscribe(room, (await bus.head(room)).last_id)
        await bus.publish(room, _notice(0))
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert seen == [room]
        sid = await bus.publish(room, _notice(1))
        assert [e["id"] for e in await sink.wait_for(room, 1, timeout=5)] == [sid]
    finally:
        await reader.stop()
        await reader_redis.aclose()
