"""The event types of PROTOCOL.md §4, one enum for every module that builds or reads events.

History events carry an `id`; state events are coalesced (the latest value counts); replies
go to one connection. The Lua scripts that write history themselves (``buy.lua`` at sell-out,
``sale_end.lua``) spell the same names; ``tests/engine/test_events.py`` checks that they do.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    # history (ids)
    DANMAKU = "danmaku"
    NOTICE = "notice"
    SALE_STARTED = "sale.started"
    SALE_SOLDOUT = "sale.soldout"
    SALE_ENDED = "sale.ended"
    LOTTERY_STARTED = "lottery.started"
    LOTTERY_DRAWN = "lottery.drawn"
    ROOM_LIVE = "room.live"
    ROOM_ENDED = "room.ended"
    # state (no id; coalesced)
    LIKES = "likes"
    ONLINE = "online"
    SALE_STOCK = "sale.stock"
    # this connection only
    WELCOME = "welcome"
    ACK = "ack"
    ERROR = "error"


HISTORY = frozenset(
    {
        EventType.DANMAKU,
        EventType.NOTICE,
        EventType.SALE_STARTED,
        EventType.SALE_SOLDOUT,
        EventType.SALE_ENDED,
        EventType.LOTTERY_STARTED,
        EventType.LOTTERY_DRAWN,
        EventType.ROOM_LIVE,
        EventType.ROOM_ENDED,
    }
)
