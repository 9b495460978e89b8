"""One viewer's WebSocket session as a state machine: no sockets, no tasks, time passed in.

The gateway's adapters (``gateway/wsserver.py``, ``gateway/hub.py``) own the socket, the timers
and Redis; they feed this object what happened and do what it answers. Every rule of a viewer's
connection lives here, testable with a fake clock (``tests/engine/test_session.py``).

Phases::

    JOINING ──replay_plan──► REPLAYING ──go_live──► LIVE ──close──► CLOSING
       └───────────────── close (token expiry, preview end, 4408 while joining) ───┘

Rules:

1. **No gap, no duplicate.** The connection is attached to its room before anything is read:
   live batches that arrive while it joins or replays are buffered (``on_batch`` → BUFFERED),
   at most ``join_pending_limit`` events (then 4408: resume later with ``since``).
2. **Resume.** ``replay_plan`` decides ``recovered`` (same epoch, every event after ``since``
   retained) and where replay starts; ``replayed`` moves that point as chunks go out.
3. **The hand-off** (``go_live``, one synchronous step): the buffered events newer than the last
   one replayed go out with the room's current state, and the session remembers the newest id
   it sent (``skip_until``). Until a shared batch passes that id, the session gets its own
   filtered copy (``Own``); after that it shares the room's one frame (``SHARE``).
4. **The reply comes before the event.** An op's ``ack`` is sent on this connection as soon as
   Redis has the event; the event itself arrives with the next tick, like everyone's. So an
   ack's ``id`` is no resume cursor (PROTOCOL.md §4).
5. **Slow consumer.** More unsent bytes than ``send_buffer_limit`` → close 4408.
6. **Limits.** Every message costs one token of the connection's message bucket (a flood is
   dropped undecoded, said at most once a second); danmaku and likes have per-user buckets that
   the user's connections on one gateway share; too many bad messages in a window → 1008.
7. **Time.** The token's ``exp`` closes with 4401, a preview's end with 4403; ``deadline`` says
   when the adapter must call ``on_time`` next.
8. **Chat rules.** ``check_danmaku`` refuses empty, too long, preview, muted, blocked, rate
   limited — in that order — and returns the text to publish.
9. **Lottery triggers.** A keyword danmaku enters its sender once per lottery; a like counts
   once per like-rule lottery; both only while the lottery is open and the viewer eligible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from engine.access import AccessDecision, AccessKind
from engine.batch import Event
from engine.bus import StreamHead
from engine.errors import (
    BadRequest,
    Blocked,
    Empty,
    LiveroomError,
    Muted,
    NotEntitled,
    RateLimited,
    TooLong,
)
from engine.events import EventType
from engine.ids import Cursor, EventId, stream_id_key
from engine.lottery import Rule, eligible, keyword_matches
from engine.ratelimit import TokenBucket, WindowCounter
from engine.settings import Settings
from engine.tokens import Identity
from engine.words import WordFilter

CLOSE_POLICY = 1008
CLOSE_SLOW_CONSUMER = 4408
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_ACCESS_ENDED = 4403


class Phase(Enum):
    JOINING = "joining"
    REPLAYING = "replaying"
    LIVE = "live"
    CLOSING = "closing"


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with this code and reason."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Own:
    """Send these events to this connection only (its part of a shared batch)."""

    events: list[Event]


class _Marker(Enum):
    SHARE = "share"
    BUFFERED = "buffered"


SHARE = _Marker.SHARE
"""Write the room's shared frame of this batch."""
BUFFERED = _Marker.BUFFERED
"""Nothing to write now: the batch was kept for the hand-off."""

BatchAction = _Marker | Own | Close


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    recovered: bool
    after: EventId
    """Replay the retained events after this id (nothing when not recovered)."""


@dataclass(frozen=True, slots=True)
class UserLimits:
    """A user's danmaku and like buckets in one room, shared by its connections."""

    danmaku: TokenBucket
    likes: TokenBucket

    @classmethod
    def new(cls, settings: Settings, now: float) -> UserLimits:
        return cls(
            TokenBucket(settings.danmaku_rate, settings.danmaku_burst, now),
            TokenBucket(settings.like_rate, settings.like_burst, now),
        )


class ViewerSession:
    """One connection's rules and state (see the module docstring)."""

    __slots__ = (
        "identity",
        "room",
        "access",
        "tier",
        "muted_until",
        "preview_ends_at",
        "phase",
        "shares",
        "closing",
        "pending",
        "skip_until",
        "limits",
        "_settings",
        "_after",
        "_messages",
        "_bad",
        "dropped",
        "_flood_noted_at",
        "_entered",
        "_liked",
    )

    def __init__(
        self,
        identity: Identity,
        room: str,
        decision: AccessDecision,
        settings: Settings,
        now: float,
        limits: UserLimits | None = None,
    ) -> None:
        self.identity = identity
        self.room = room
        self.access = AccessKind(decision.kind)
        self.tier = decision.tier
        self.muted_until = decision.muted_until
        self.preview_ends_at = decision.preview_ends_at
        self.phase = Phase.JOINING
        self.shares = False
        """True while this connection simply takes its room's shared frame (LIVE, nothing
        covered by its replay): a plain attribute, read per connection per tick."""
        self.closing = False
        """True from the moment a close was decided (a plain attribute, read per write)."""
        self.pending: list[Event] = []
        self.skip_until: tuple[int, int] | None = None
        self.limits = limits or UserLimits.new(settings, now)
        self._settings = settings
        self._after: tuple[int, int] = (0, 0)
        self._messages = TokenBucket(settings.msg_rate, settings.msg_burst, now)
        self._bad = WindowCounter(settings.bad_message_limit, settings.bad_message_window_s)
        self.dropped = 0
        self._flood_noted_at = float("-inf")
        self._entered: set[str] = set()
        self._liked: set[str] = set()

    # -- joining -------------------------------------------------------------------------

    @property
    def send_buffer_limit(self) -> int:
        return self._settings.send_buffer_limit

    @property
    def joining(self) -> bool:
        """Live batches are buffered, not sent (JOINING or REPLAYING)."""
        return self.phase in (Phase.JOINING, Phase.REPLAYING)

    def replay_plan(self, head: StreamHead, epoch: str, since: Cursor | None) -> ReplayPlan:
        recovered = since is not None and since.epoch == epoch and head.can_resume_after(since.id)
        after = since.id if recovered and since is not None else head.last_id
        self._after = stream_id_key(after)
        if self.phase is Phase.JOINING:
            self.phase = Phase.REPLAYING
        return ReplayPlan(recovered, after)

    def replayed(self, events: list[Event]) -> None:
        """A chunk of replay went out: the hand-off starts after its last event."""
        if events:
            self._after = stream_id_key(events[-1]["id"])

    def go_live(self, state: list[Event]) -> list[Event]:
        """End the join (rule 3): what to send now, before any shared frame."""
        after = self._after
        fresh = [e for e in self.pending if stream_id_key(e["id"]) > after]
        self.pending = []
        self.skip_until = stream_id_key(fresh[-1]["id"]) if fresh else after
        if self.phase is Phase.REPLAYING:
            self.phase = Phase.LIVE
        self.shares = self.phase is Phase.LIVE and self.skip_until is None
        return fresh + state

    # -- the tick ------------------------------------------------------------------------

    def on_batch(self, history: list[Event], state: list[Event]) -> BatchAction:
        """What this connection does with the room's batch of one tick (rules 1 and 3)."""
        if self.phase is Phase.CLOSING:
            return BUFFERED
        if self.joining:
            if history:
                self.pending.extend(history)
                if len(self.pending) > self._settings.join_pending_limit:
                    return self.close(CLOSE_SLOW_CONSUMER, "too far behind while joining")
            return BUFFERED
        skip = self.skip_until
        if skip is None or not history:
            return SHARE
        if stream_id_key(history[0]["id"]) > skip:
            self.skip_until = None
            self.shares = True
            return SHARE
        # Replay already covered part of this batch: this one gets the rest.
        if stream_id_key(history[-1]["id"]) >= skip:
            self.skip_until = None
            self.shares = True
        return Own([e for e in history if stream_id_key(e["id"]) > skip] + state)

    def on_unsent(self, unsent_bytes: int) -> Close | None:
        """After a write (rule 5)."""
        if unsent_bytes > self._settings.send_buffer_limit and self.phase is not Phase.CLOSING:
            return self.close(CLOSE_SLOW_CONSUMER, "slow consumer: resume with since")
        return None

    # -- messages and ops ----------------------------------------------------------------

    def on_message(self, now: float) -> tuple[bool, Event | None]:
        """Whether to handle a message at all, and the notice to send about a flood (rule 6):
        over the rate, the message is dropped undecoded; at most one notice a second."""
        if self._messages.take(now):
            return True, None
        self.dropped += 1
        if now - self._flood_noted_at < 1.0:
            return False, None
        self._flood_noted_at = now
        s = self._settings
        return False, error_event(
            RateLimited(f"over {s.msg_rate:g} messages/s: {self.dropped} dropped"), None
        )

    def on_refused(
        self, exc: LiveroomError, ref: str | None, now: float
    ) -> tuple[Event, Close | None]:
        """The error reply to an op, and the close if it was one bad message too many."""
        close = None
        if exc.code == BadRequest.code and self._bad.hit(now):
            close = self.close(CLOSE_POLICY, "too many bad messages")
        return error_event(exc, ref), close

    def allows_chat(self) -> bool:
        return self.access is not AccessKind.PREVIEW

    def check_entitled(self) -> None:
        """`buy` and `enter` need more than a preview."""
        if not self.allows_chat():
            raise NotEntitled("preview viewers may not buy or enter lotteries")

    def check_danmaku(self, text: str, now: float, *words: WordFilter) -> str:
        """The text to publish, or the refusal (rule 8)."""
        s = self._settings
        text = text.strip()
        if not text:
            raise Empty("danmaku text is empty")
        if len(text) > s.danmaku_max_chars:
            raise TooLong(f"danmaku longer than {s.danmaku_max_chars} characters")
        if not self.allows_chat():
            raise NotEntitled("preview viewers may not chat")
        if now < self.muted_until:
            raise Muted(f"you are muted here for {self.muted_until - now:.0f} more seconds")
        folded = text.casefold()
        if any(w.matches(folded) for w in words):
            raise Blocked("this message contains a blocked word")
        if not self.limits.danmaku.take(now):
            raise RateLimited("sending danmaku too fast")
        return text

    def danmaku_event(self, text: str, now: float) -> Event:
        return {
            "type": EventType.DANMAKU,
            "user": {"id": self.identity.user, "name": self.identity.name},
            "text": text,
            "ts": now,
        }

    def take_likes(self, count: int, now: float) -> int:
        """Likes counted (the rest are dropped silently: PROTOCOL.md §4)."""
        return self.limits.likes.take_up_to(now, count)

    # -- lottery triggers (rule 9) -------------------------------------------------------

    def keyword_entries(
        self, text: str, lotteries: Mapping[str, tuple[Rule, float]], now: float
    ) -> list[str]:
        """Open lotteries this danmaku enters its sender into (each once)."""
        out = []
        for lottery, (rule, ends_at) in lotteries.items():
            if now >= ends_at or lottery in self._entered or not self._eligible(rule):
                continue
            if keyword_matches(rule, text):
                self._entered.add(lottery)
                out.append(lottery)
        return out

    def like_entries(self, lotteries: Mapping[str, tuple[Rule, float]], now: float) -> list[str]:
        """Like-rule lotteries this like counts for (each once)."""
        out = []
        for lottery, (rule, ends_at) in lotteries.items():
            if now >= ends_at or lottery in self._liked or not rule.like:
                continue
            if self._eligible(rule):
                self._liked.add(lottery)
                out.append(lottery)
        return out

    def entered(self, lottery: str) -> None:
        """An `enter` op went through: a keyword later does not enter again."""
        self._entered.add(lottery)

    def _eligible(self, rule: Rule) -> bool:
        return self.check_eligible(rule) is None

    def check_eligible(self, rule: Rule) -> str | None:
        """Why this viewer may not enter a lottery with ``rule`` (None: it may)."""
        is_host = self.access is AccessKind.HOST
        return eligible(rule, access=self.access, tier=self.tier, is_host=is_host)

    # -- time and access -----------------------------------------------------------------

    def deadline(self) -> float | None:
        """When ``on_time`` must run next: the token's expiry or the preview's end."""
        ends = [self.identity.exp]
        if self.access is AccessKind.PREVIEW and self.preview_ends_at is not None:
            ends.append(self.preview_ends_at)
        return min(ends) if self.phase is not Phase.CLOSING else None

    def on_time(self, now: float) -> Close | None:
        if self.phase is Phase.CLOSING:
            return None
        if now >= self.identity.exp:
            return self.close(
                CLOSE_TOKEN_EXPIRED, "token expired: reconnect with a fresh token and since"
            )
        if (
            self.access is AccessKind.PREVIEW
            and self.preview_ends_at is not None
            and now >= self.preview_ends_at
        ):
            return self.close(CLOSE_ACCESS_ENDED, "preview over")
        return None

    def on_access(self, decision: AccessDecision) -> None:
        """A re-check after a revocation still admits: a ticket bought during a preview, a new
        tier. (A refused re-check is ``close(4403, ...)``.)"""
        self.access = AccessKind(decision.kind)
        self.tier = decision.tier
        self.preview_ends_at = decision.preview_ends_at

    def on_mute(self, until: float) -> None:
        self.muted_until = until

    def close(self, code: int, reason: str) -> Close:
        self.phase = Phase.CLOSING
        self.shares = False
        self.closing = True
        return Close(code, reason[:120])


def error_event(exc: LiveroomError, ref: str | None) -> Event:
    err: dict[str, Any] = {"type": EventType.ERROR, "code": exc.code, "message": exc.message}
    if ref is not None:
        err["ref"] = ref
    return err
