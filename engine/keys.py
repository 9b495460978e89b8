"""Every Redis key name liveroom uses, in one place.

All keys of a room share the hash tag ``{room:ID}`` so that a room lives on one Redis Cluster
slot and its Lua scripts stay legal. Process-wide keys carry no room tag.
"""

from __future__ import annotations

from engine.ids import RoomId

PREFIX = "lr:"


def _room(room: RoomId) -> str:
    return f"{PREFIX}{{room:{room}}}"


def room(room: RoomId) -> str:
    """Hash: the room record (title, status, access, owner, epoch, ...)."""
    return _room(room) + ":room"


def events(room: RoomId) -> str:
    """Stream: the room's history events; the stream id is the event id."""
    return _room(room) + ":events"


def likes(room: RoomId) -> str:
    """String counter: total likes of the room."""
    return _room(room) + ":likes"


def online(room: RoomId) -> str:
    """Hash: gateway id -> that gateway's local viewer count for the room."""
    return _room(room) + ":online"


def online_expiry(room: RoomId) -> str:
    """Hash: gateway id -> ms timestamp after which its share of `online` is void."""
    return _room(room) + ":online:exp"


def danmaku_count(room: RoomId) -> str:
    """String counter: danmaku accepted in the room."""
    return _room(room) + ":danmaku"


def rooms_index() -> str:
    """Set of every room id (process-wide, not room-tagged); kept beside `rooms_by_time`."""
    return PREFIX + "rooms"


def rooms_by_time() -> str:
    """Sorted set: every room id by creation time (epoch s), for `GET /api/rooms`."""
    return PREFIX + "rooms:created"


def rooms_owned(user: str) -> str:
    """Sorted set: ids of the rooms ``user`` created, by creation time (user-tagged)."""
    return f"{PREFIX}{{user:{user}}}:rooms"


def reader_wakeup(gateway: str) -> str:
    """Stream a gateway's room reader also blocks on, poked when its room set changes."""
    return f"{PREFIX}gw:{gateway}:wake"


def ticket(room: RoomId, user: str) -> str:
    """String: a ticket of ``user`` for ``room`` (value: expiry epoch s, 0 = none; key TTL too)."""
    return _room(room) + f":ticket:{user}"


def preview(room: RoomId) -> str:
    """Hash: user -> epoch seconds of that user's first preview connection to the room."""
    return _room(room) + ":preview"


def membership(user: str) -> str:
    """Hash: a user's membership {tier, expires_at} (user-tagged, not room-tagged)."""
    return f"{PREFIX}{{user:{user}}}:member"


def revocations() -> str:
    """Stream: access changes every gateway (and media process) must re-check at once."""
    return PREFIX + "revocations"


def sale(room: RoomId, sale_id: str) -> str:
    """Hash: a flash sale's record and counters (stock, left, sold, revenue, buyers, status)."""
    return _room(room) + f":sale:{sale_id}"


def sale_bought(room: RoomId, sale_id: str) -> str:
    """Hash: user -> quantity bought in the sale (the per-user limit)."""
    return _room(room) + f":sale:{sale_id}:bought"


def sale_refs(room: RoomId, sale_id: str) -> str:
    """Hash: user + ref -> the answer given (idempotency of `buy`)."""
    return _room(room) + f":sale:{sale_id}:refs"


def sale_orders(room: RoomId, sale_id: str) -> str:
    """Stream: every confirmed order of the sale, in order."""
    return _room(room) + f":sale:{sale_id}:orders"


def sales(room: RoomId) -> str:
    """Sorted set: the room's sale ids by creation time."""
    return _room(room) + ":sales"


def stock(room: RoomId) -> str:
    """Hash: open sale id -> units left (what gateways poll each tick for `sale.stock`)."""
    return _room(room) + ":stock"


def timers() -> str:
    """Sorted set: due time (ms) -> "kind|room|id" of timed transitions (process-wide)."""
    return PREFIX + "timers"


def media_viewers(room: RoomId) -> str:
    """Hash: media process id -> its WHEP session count for the room (see lua/online.lua)."""
    return _room(room) + ":media"


def media_viewers_expiry(room: RoomId) -> str:
    """Hash: media process id -> ms timestamp after which its share of `media` is void."""
    return _room(room) + ":media:exp"


def mute(room: RoomId, user: str) -> str:
    """String with TTL: ``user`` may not chat in ``room`` until it expires (value: until, s)."""
    return _room(room) + f":mute:{user}"


def ban(room: RoomId, user: str) -> str:
    """String: ``user`` is banned from ``room`` (value: until, epoch s; 0 = for good; a timed
    ban also carries the TTL)."""
    return _room(room) + f":ban:{user}"


def blocked_words(room: RoomId) -> str:
    """Set: the room's own blocked words, casefolded (danmaku containing one are refused)."""
    return _room(room) + ":words"


def peak_online(room: RoomId) -> str:
    """String: the highest online total ever reported for the room."""
    return _room(room) + ":peak"


def unique_viewers(room: RoomId) -> str:
    """HyperLogLog: every user admitted to the room."""
    return _room(room) + ":uniq"


def lottery_key(room: RoomId, lottery: str) -> str:
    """Hash: a lottery's record (prize, winners_count, rule, status, commit, seed, times, ...)."""
    return _room(room) + f":lottery:{lottery}"


def lottery_entrants(room: RoomId, lottery: str) -> str:
    """Sorted set, every score 0 (so ordered by id): the entrants until the draw."""
    return _room(room) + f":lottery:{lottery}:entrants"


def lottery_likers(room: RoomId, lottery: str) -> str:
    """Set: users who liked while a like-rule lottery was open (deleted at the draw)."""
    return _room(room) + f":lottery:{lottery}:likers"


def lottery_waiting(room: RoomId, lottery: str) -> str:
    """Set: users who asked to enter a like-rule lottery and have not liked yet."""
    return _room(room) + f":lottery:{lottery}:waiting"


def lottery_drawn_entrants(room: RoomId, lottery: str) -> str:
    """String: the sorted entrants of a drawn lottery, newline-joined (the published list)."""
    return _room(room) + f":lottery:{lottery}:drawn"


def lottery_staged_entrants(room: RoomId, lottery: str, claim: str) -> str:
    """String: the sorted entrants as one drawer appends them page by page, renamed to
    ``lottery_drawn_entrants`` when that drawer's result is stored (expires with its claim)."""
    return _room(room) + f":lottery:{lottery}:staged:{claim}"


def lotteries(room: RoomId) -> str:
    """Sorted set: the room's lottery ids by creation time."""
    return _room(room) + ":lotteries"


def lotteries_open(room: RoomId) -> str:
    """Hash: open lottery id -> its public record (JSON), for `welcome` and rule matching."""
    return _room(room) + ":lotteries:open"


def user_conns(room: RoomId, user: str) -> str:
    """Sorted set: connection id -> expiry (ms) of ``user``'s open connections to ``room``,
    across every gateway (the per-user connection limit; see lua/conn_slot.lua)."""
    return _room(room) + f":conns:{user}"


def danmaku_ref(room: RoomId, user: str, ref: str) -> str:
    """String with TTL: the event id a danmaku ``ref`` of ``user`` published (resend = same ack)."""
    return _room(room) + f":dmref:{user}:{ref}"


def counter_seq(room: RoomId, gateway: str) -> str:
    """String with TTL: the last counter report of ``gateway`` applied to the room (so a
    retried report counts once; see lua/count.lua)."""
    return _room(room) + f":seq:{gateway}"
