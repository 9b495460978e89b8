"""Configuration: one frozen dataclass.

Every field has a safe default and a one-line docstring. Values are read from the environment
(``LIVEROOM_<FIELD>``) and CLI flags at the edge only; the core takes a ``Settings``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

from engine.errors import LiveroomError

#: Development-only token secret. The server refuses to start with it outside dev mode.
DEV_SECRET = "liveroom-dev-secret-do-not-use-in-production"


@dataclass(frozen=True, slots=True)
class Settings:
    # -- where things are
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis URL; every role of every process shares one Redis."""
    host: str = "127.0.0.1"
    """Interface the servers bind to."""
    http_port: int = 8080
    """Port of the HTTP API, web player and host console."""
    ws_port: int = 8081
    """Port of the WebSocket gateway."""
    public_ws_url: str = ""
    """WebSocket base URL that pages should use (empty: derived from the request host)."""

    # -- identity
    secret: str = DEV_SECRET
    """HS256 token secret (LIVEROOM_SECRET)."""
    dev: bool = False
    """Development mode: allows the default secret."""
    token_leeway_s: int = 5
    """Clock leeway for `exp`, at most 5 s per PROTOCOL.md §1."""

    # -- the gateway hot path
    tick_ms: int = 50
    """Events of a room collect this long and go out as one message."""
    max_message_bytes: int = 64 * 1024
    """Incoming WebSocket messages above this close with 1009."""
    max_depth: int = 8
    """Deepest nesting accepted in an incoming message."""
    send_buffer_limit: int = 1024 * 1024
    """Unsent bytes a connection may hold before it is closed with 4408."""
    socket_send_buffer: int = 256 * 1024
    """SO_SNDBUF of each viewer socket: bounds kernel memory per viewer (0 keeps autotuning)."""
    max_connections: int = 15_000
    """Connections one gateway process accepts before answering 503."""
    max_conns_per_user: int = 5
    """Connections one user may hold to one room, across every gateway (429 beyond)."""
    conn_slot_ttl_ms: int = 15_000
    """A per-user connection slot lives this long unless its gateway refreshes it (a dead
    gateway's slots free themselves after this)."""
    max_conns_per_ip: int = 1_000
    """Connections one client IP may hold to one gateway process (429 beyond; 0 = no cap)."""
    ip_limit_exempt: str = "127.0.0.1,::1"
    """Comma-separated addresses `max_conns_per_ip` does not apply to: a reverse proxy or
    balancer in front of the gateway (every client arrives from it), a load generator."""
    allowed_origins: str = ""
    """Comma-separated `Origin`s browsers may connect from (403 otherwise). Empty: any origin
    in dev mode; outside it, only pages of the host the client connected to."""
    max_body_bytes: int = 64 * 1024
    """Largest HTTP request body the API (and WHEP/WHIP) reads (413 beyond)."""
    handshake_timeout_s: float = 5.0
    """A WebSocket opening handshake (request, auth, upgrade) must finish within this."""
    msg_rate: float = 100.0
    """Sustained messages per second one connection may send, any op (more are dropped)."""
    msg_burst: int = 200
    """Messages a connection may send at once before the excess is dropped."""
    bad_message_limit: int = 10
    """Bad messages tolerated in `bad_message_window_s`; one more closes with 1008."""
    bad_message_window_s: float = 10.0
    """Window for `bad_message_limit`."""
    danmaku_max_chars: int = 200
    """Longest danmaku accepted (`too_long` beyond)."""
    blocked_words: str = ""
    """Comma-separated words a danmaku may not contain (`blocked`), matched case-insensitively."""
    danmaku_rate: float = 2.0
    """Sustained danmaku per second per user in a room (its connections on one gateway
    share it)."""
    danmaku_burst: int = 10
    """Danmaku a user may send at once before `rate_limited`."""
    danmaku_ref_ttl_s: int = 600
    """A danmaku `ref` publishes at most once this long (a resend gets the same ack)."""
    like_rate: float = 500.0
    """Sustained likes per second per user in a room; more are dropped silently."""
    like_burst: int = 2_000
    """Likes a user may send at once."""
    max_inflight_buys: int = 32
    """`buy` ops of one connection handled at once (more wait their turn)."""
    buy_batching: bool = True
    """Share one Redis round trip among concurrent `buy` ops (each stays atomic)."""
    replay_chunk: int = 500
    """Events per message when replaying history on resume."""
    join_pending_limit: int = 20_000
    """Live events buffered for a connection while its replay is read (4408 beyond)."""
    close_timeout_s: float = 2.0
    """How long a closing handshake may take before the TCP connection is dropped."""
    drain_timeout_s: float = 8.0
    """On SIGTERM, the most time spent closing clients before exiting."""

    # -- history and counters
    history_keep_events: int = 10_000
    """Retained history: at least this many events..."""
    history_keep_seconds: int = 600
    """...or this many seconds, whichever holds more."""
    history_hard_cap: int = 1_000_000
    """Absolute cap on a room's stream length, whatever its age (memory bound)."""
    counter_interval_ms: int = 250
    """How often a gateway publishes its online counts and reads the room totals."""
    stock_interval_ms: int = 1_000
    """Most often a room's viewers get `sale.stock` (the final 0 comes as `sale.soldout`)."""
    max_pending_buys: int = 10_000
    """`buy` ops one gateway process queues for Redis; beyond, `unavailable` at once."""
    online_ttl_ms: int = 3_000
    """A gateway's share of a room's online count expires this long after its last report."""
    read_block_ms: int = 1_000
    """XREAD BLOCK timeout of the room reader."""
    read_count: int = 1_000
    """Most entries the room reader takes per stream per XREAD."""

    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form settings for later roles; ignored by the core."""

    def check(self) -> Settings:
        """Refuse unsafe configurations; return self for chaining."""
        if self.secret == DEV_SECRET and not self.dev:
            raise LiveroomError(
                "refusing to start with the default token secret: set LIVEROOM_SECRET "
                "(or pass --dev for development)"
            )
        if len(self.secret) < 16:
            raise LiveroomError("LIVEROOM_SECRET must be at least 16 characters")
        if not 0 <= self.token_leeway_s <= 5:
            raise LiveroomError("token leeway must be between 0 and 5 seconds")
        if self.tick_ms < 1:
            raise LiveroomError("tick_ms must be positive")
        return self

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``LIVEROOM_<FIELD>`` (and ``REDIS_URL``) from the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            raw = env.get("LIVEROOM_" + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _convert(raw, type(getattr(cls(), f.name)))
        if "redis_url" not in values and env.get("REDIS_URL"):
            values["redis_url"] = env["REDIS_URL"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _convert(raw: str, typ: type) -> Any:
    if typ is bool:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if typ is int:
        return int(raw)
    if typ is float:
        return float(raw)
    return raw
