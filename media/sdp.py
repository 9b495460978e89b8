"""Reading WHEP/WHIP offers before any peer connection exists (no I/O).

Everything a client can get wrong in an offer is found here and refused with a 4xx, so that a
bad offer never costs a peer connection, a port or a certificate. The codec of a viewer is
chosen here too: the room's running encoder if the viewer can take it, so that a room keeps
one encoder however many viewers join.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from aiortc import sdp
from aiortc.codecs import CODECS
from aiortc.rtcpeerconnection import find_common_codecs

from media.errors import BadSdp, NoVideo, UnsupportedCodec

#: Directions of an offered video m-line that each endpoint can serve.
WHEP_DIRECTIONS = ("recvonly", "sendrecv")
WHIP_DIRECTIONS = ("sendonly", "sendrecv")


@dataclass(frozen=True, slots=True)
class Offer:
    text: str
    video_codecs: tuple[str, ...]
    """Video codecs both sides speak (``H264``, ``VP8``), in the client's order."""
    has_audio: bool
    audio_codecs: tuple[str, ...] = ()
    """Audio codecs of the first audio m-line (``OPUS``, ``PCMU``, ...), in the client's order."""

    @property
    def wants_opus(self) -> bool:
        """An audio m-line that can carry the room's sound (rooms speak Opus only)."""
        return self.has_audio and "OPUS" in self.audio_codecs


def read_offer(body: bytes, *, directions: Sequence[str]) -> Offer:
    """Validate an SDP offer; raise ``BadSdp`` (400) or ``NoVideo`` (422)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadSdp("the SDP offer is not UTF-8 text") from None
    if not text.lstrip().startswith("v=0"):
        raise BadSdp("the body is not an SDP offer (it must start with v=0)")
    if "\x00" in text:
        raise BadSdp("the SDP offer contains NUL characters")
    try:
        desc = sdp.SessionDescription.parse(text)
    except Exception as exc:  # the parser raises whatever it trips on
        raise BadSdp(f"unreadable SDP offer: {exc.__class__.__name__}") from None
    video = [m for m in desc.media if m.kind == "video" and m.port != 0]
    if not video:
        raise NoVideo("the offer has no video m-line")
    m = video[0]
    if (m.direction or "sendrecv") not in directions:
        raise NoVideo(f"the offer's video must be {' or '.join(directions)}, not {m.direction}")
    for media in desc.media:
        if not media.ice.usernameFragment or not media.ice.password:
            raise BadSdp("the offer lacks ICE credentials (a=ice-ufrag, a=ice-pwd)")
        if not media.dtls or not media.dtls.fingerprints:
            raise BadSdp("the offer lacks a DTLS fingerprint (a=fingerprint)")
    try:
        common = find_common_codecs(CODECS["video"], m.rtp.codecs)
    except Exception:
        raise BadSdp("unreadable codec parameters in the offer") from None
    names = tuple(dict.fromkeys(c.name.upper() for c in common if c.name.lower() != "rtx"))
    audio = [x for x in desc.media if x.kind == "audio" and x.port != 0]
    sounds = tuple(dict.fromkeys(c.name.upper() for c in audio[0].rtp.codecs)) if audio else ()
    return Offer(text, names, bool(audio), sounds)


def choose_codec(
    offered: Sequence[str], allowed: Sequence[str], running: Collection[str] = ()
) -> str:
    """The codec a viewer gets: a ``running`` one it accepts (no new encoder), else the first of
    ``allowed`` (server preference) that it offers."""
    for codec in allowed:
        if codec in running and codec in offered:
            return codec
    for codec in allowed:
        if codec in offered:
            return codec
    raise UnsupportedCodec(
        f"this room's video is {' or '.join(allowed)}; the offer has {', '.join(offered) or 'none'}"
    )
