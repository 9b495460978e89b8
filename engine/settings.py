"""Configuration: one frozen dataclass, ``Settings``, with the media role's part nested in it.

Every field has a safe default and a one-line docstring. ``Settings.from_env`` reads
``LIVEROOM_<FIELD>`` (and ``REDIS_URL``) into ``Settings`` and ``LIVEROOM_MEDIA_<FIELD>`` into
``Settings.media``, from an environment the caller passes: the edge (the CLI, load tests) hands
it ``os.environ``; nothing here reads the process environment itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from engine.drawpool import MAX_PROCESSES as MAX_DRAW_PROCESSES
from engine.errors import LiveroomError

#: Development-only token secret. The server refuses to start with it outside dev mode.
DEV_SECRET = "liveroom-dev-secret-do-not-use-in-production"

MEDIA_CODECS = ("H264", "VP8")


@dataclass(frozen=True, slots=True)
class MediaSettings:
    """The media role (WHEP/WHIP): read from ``LIVEROOM_MEDIA_<FIELD>``; what ``Settings`` already
    holds (secret, Redis, counter intervals) is never duplicated here."""

    # -- what a room's encoder produces (test pattern and WHIP ingest)
    width: int = 1280
    """Width of the generated test pattern (WHIP ingest keeps the host's size)."""
    height: int = 720
    """Height of the generated test pattern."""
    fps: int = 30
    """Frame rate of the test pattern, and the most a WHIP ingest is encoded at."""
    bitrate: int = 1_500_000
    """Target bits per second of each room encoder."""
    keyframe_interval_s: float = 1.0
    """Seconds between keyframes: how long a new or lagging viewer waits at most (1-2 s)."""
    codecs: str = "H264,VP8"
    """Video codecs offered, most preferred first (H264 = constrained baseline)."""
    vp8_cpu_used: int = 12
    """libvpx speed (higher is faster and blurrier; 16 is the fastest)."""
    encoder_threads: int = 1
    """Threads per encoder (0: the codec decides). One media process per core wants 1: more
    threads on one core only contend, and 720p30 ultrafast H.264 takes ~5 ms per frame."""
    shared_encoder: bool = True
    """One encoder per room and codec, shared by every viewer. False encodes per viewer: only
    for the benchmark's comparison, never in production."""

    # -- sound (Opus, 48 kHz, 20 ms packets)
    audio_bitrate: int = 64_000
    """Target bits per second of a room's Opus encoder (pattern tone; WHIP audio is passed
    through as the host sent it)."""
    tone_hz: int = 440
    """The pattern's tone; a 1 kHz click marks each second, aligned with the frame counter."""
    audio_queue_frames: int = 50
    """Audio packets (20 ms each) a viewer may fall behind before it skips to the live edge."""

    # -- fan-out
    lean_sender: bool = True
    """Viewers' senders run the lean RTP loop (media/rtc.py ``shared_sender``: header, SRTP,
    send). False keeps aiortc's own loop: only for the benchmark's comparison."""
    viewer_queue_frames: int = 30
    """Frames a viewer may fall behind the room before it skips to the next keyframe."""
    keyframe_request_gap_s: float = 0.5
    """Least time between keyframes forced by joins and PLIs (keyframe storms are costly)."""

    # -- limits
    max_sessions: int = 500
    """WHEP sessions one media process holds before answering 503."""
    max_sessions_per_user: int = 3
    """WHEP sessions one user may hold in one room (429 beyond)."""
    max_sdp_bytes: int = 64 * 1024
    """Largest SDP body accepted (413 beyond)."""
    connect_timeout_s: float = 20.0
    """A session whose ICE/DTLS does not connect in this time is ended."""
    idle_stop_s: float = 5.0
    """A built-in source keeps running this long after its last viewer leaves."""

    # -- network
    ice_servers: str = ""
    """Comma-separated STUN/TURN URLs for the server's ICE agent (empty: host candidates)."""

    def codec_list(self) -> tuple[str, ...]:
        return tuple(c.strip().upper() for c in self.codecs.split(",") if c.strip())

    def check(self) -> MediaSettings:
        """Refuse media configurations the encoders cannot run; return self for chaining."""
        if not self.codec_list() or any(c not in MEDIA_CODECS for c in self.codec_list()):
            raise LiveroomError(f"media codecs must be among {', '.join(MEDIA_CODECS)}")
        if not 1 <= self.fps <= 60:
            raise LiveroomError("media fps must be 1-60")
        if self.width % 2 or self.height % 2 or not (16 <= self.width <= 3840):
            raise LiveroomError("media width and height must be even, 16-3840")
        if not 6_000 <= self.audio_bitrate <= 510_000:
            raise LiveroomError("media audio bitrate must be 6000-510000 (Opus)")
        if not 20 <= self.tone_hz <= 20_000 or self.audio_queue_frames < 2:
            raise LiveroomError("media tone must be 20-20000 Hz, the audio queue >= 2 packets")
        if not 0.2 <= self.keyframe_interval_s <= 10:
            raise LiveroomError("media keyframe interval must be 0.2-10 s")
        if self.viewer_queue_frames < 2:
            raise LiveroomError("media viewer queue must hold at least 2 frames")
        return self

    @property
    def gop_frames(self) -> int:
        return max(1, round(self.fps * self.keyframe_interval_s))

    def with_(self, **changes: Any) -> MediaSettings:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Settings:
    # -- where things are
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis URL; every role of every process shares one Redis: ``redis://HOST:PORT/DB``, or
    ``redis+cluster://HOST:PORT`` (any one node of a Redis Cluster; the others are found)."""
    host: str = "127.0.0.1"
    """Interface the servers bind to."""
    http_port: int = 8080
    """Port of the HTTP API, web player and host console."""
    ws_port: int = 8081
    """Port of the WebSocket gateway."""
    log_format: str = "text"
    """Log lines as human text, or ``json``: one object per line with the process role, the
    pid and, for a connection, its ``conn`` id (see runtime/logs.py)."""
    workers: int = 1
    """Gateway processes serving ``ws_port`` together (``serve --workers N``; SO_REUSEPORT:
    the kernel spreads new connections over them)."""
    ws_reuse_port: bool = False
    """Bind ``ws_port`` with SO_REUSEPORT (set for each worker by ``serve --workers``)."""
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
    ws_backlog: int = 4096
    """Connections the kernel queues for the gateway before it accepts them (listen backlog;
    capped by ``net.core.somaxconn``). After a gateway restart every viewer comes back at once:
    a short queue drops their SYNs, and each dropped one waits 1 s, then 3 s, ... to retry."""
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
    max_body_bytes: int = 1024 * 1024
    """Largest HTTP request body the API reads (413 beyond): above any body its schemas allow."""
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
    ping_interval_s: float = 20.0
    """Every connection is pinged this often (one loop for all: no task per connection)."""
    ping_timeout_s: float = 20.0
    """A connection whose pong has not come back this long after its ping is closed (1011)."""
    max_inflight_writes: int = 32
    """Writes (danmaku, `buy`) of one connection on their way to Redis at once; at the bound the
    gateway stops reading that connection until one is answered (TCP pushes back)."""
    write_batching: bool = True
    """Share one Redis round trip among a process's concurrent writes (danmaku, `buy`; each
    stays its own atomic script): ``engine/pipeline.py``. Off only to measure what it saves."""
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
    counts_push_ms: int = 1_000
    """`likes` and `online` go to a room's viewers at most this often (one frame to each)."""
    counter_interval_ms: int = 250
    """How often a gateway publishes its online counts and reads the room totals."""
    stock_interval_ms: int = 1_000
    """Most often a room's viewers get `sale.stock` (the final 0 comes as `sale.soldout`)."""
    max_pending_writes: int = 20_000
    """Writes (danmaku, `buy`) one gateway process queues for Redis; beyond, `unavailable` at
    once (resending the same ref later is safe)."""
    online_ttl_ms: int = 3_000
    """A gateway's share of a room's online count expires this long after its last report."""
    read_block_ms: int = 1_000
    """XREAD BLOCK timeout of the room reader."""
    read_count: int = 1_000
    """Most entries the room reader takes per stream per XREAD."""
    draw_processes: int = 0
    """Worker processes that hash a lottery draw of more than 100,000 entrants in parallel
    (hashlib holds the GIL for short ids, so threads cannot); 0: one per CPU, at most 16."""
    cluster_poll_ms: int = 25
    """On a Redis Cluster (where one XREAD cannot span rooms of different slots) the reader
    polls its rooms' streams, one pipelined round to every node at a time: back to back while
    events come, then waiting 1, 2, 4 ... ms up to this long while none do (the longest an idle
    room's first event waits)."""

    # -- the media role
    media: MediaSettings = field(default_factory=MediaSettings)
    """WHEP/WHIP encoders, fan-out and limits (``LIVEROOM_MEDIA_<FIELD>``)."""

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
        if self.log_format not in ("text", "json"):
            raise LiveroomError("log_format must be text or json")
        if not 1 <= self.workers <= 256:
            raise LiveroomError("workers must be 1-256")
        if not 0 <= self.draw_processes <= MAX_DRAW_PROCESSES:
            raise LiveroomError(f"draw_processes must be 0-{MAX_DRAW_PROCESSES}")
        if not 1 <= self.ws_backlog <= 65_535:
            raise LiveroomError("ws_backlog must be 1-65535")
        return self

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Read ``LIVEROOM_<FIELD>`` (and ``REDIS_URL``) from ``environ``, and
        ``LIVEROOM_MEDIA_<FIELD>`` into ``media``; ``overrides`` that are not None win."""
        values = _read(cls, environ, "LIVEROOM_", skip=frozenset({"media"}))
        if "redis_url" not in values and environ.get("REDIS_URL"):
            values["redis_url"] = environ["REDIS_URL"]
        values["media"] = MediaSettings(**_read(MediaSettings, environ, "LIVEROOM_MEDIA_"))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _read(
    cls: type[Settings] | type[MediaSettings],
    environ: Mapping[str, str],
    prefix: str,
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The fields of ``cls`` set in ``environ`` as ``<prefix><FIELD>``, typed like the defaults."""
    defaults = cls()
    values: dict[str, Any] = {}
    for f in fields(cls):
        raw = environ.get(prefix + f.name.upper())
        if raw is None or f.name in skip:
            continue
        values[f.name] = _convert(raw, type(getattr(defaults, f.name)))
    return values


def _convert(raw: str, typ: type) -> Any:
    if typ is bool:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if typ is int:
        return int(raw)
    if typ is float:
        return float(raw)
    return raw
