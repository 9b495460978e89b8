"""The aiortc seams of the media role, in one place.

aiortc's sender asks its clock twice per RTP packet (the abs-send-time header extension and the
sender-report timestamp), through ``datetime`` arithmetic that costs more than the SRTP
encryption of the packet. ``fast_clock`` swaps in the same NTP value computed from
``time.time()``: identical results (microsecond resolution, as before), a fraction of the cost.
It only ever replaces aiortc's function with an equal one, and only once per process.

Every other aiortc internal the media role relies on is used here and only here, each with a
test in tests/media/test_rtc.py: ``h264_payloads`` / ``vp8_payloads`` (aiortc's packetizers),
``take_over_sender`` (a sender's encoder and keyframe hook), ``shared_sender`` (its RTP loop)
and ``tap_receiver`` (a receiver's RTP entry point). pyproject.toml pins aiortc to the versions
those tests cover.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCRtpReceiver, RTCRtpSender, clock
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import (
    RTP_HISTORY_SIZE,
    HeaderExtensions,
    HeaderExtensionsMap,
    RtpPacket,
    wrap_rtx,
)
from aiortc.utils import random32

NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)


def ntp_now() -> int:
    """``aiortc.clock.current_ntp_time()``, without datetime objects."""
    us = time.time_ns() // 1_000
    high = us // 1_000_000 + NTP_UNIX_OFFSET
    low = ((us % 1_000_000) << 32) // 1_000_000
    return (high << 32) | low


def fast_clock() -> None:
    if clock.current_ntp_time is not ntp_now:
        clock.current_ntp_time = ntp_now


def codec_preferences(codec: str) -> list[RTCRtpCodecCapability]:
    """Capabilities that make aiortc answer with ``codec`` only (plus RTX retransmissions)."""
    mime = f"video/{codec}".lower()
    caps = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in caps if c.mimeType.lower() in (mime, "video/rtx")]


def h264_payloads(data: bytes) -> list[bytes]:
    """RTP payloads of one H.264 access unit (Annex B), cut as aiortc's encoder cuts them
    (its private ``_split_bitstream`` and ``_packetize``: STAP-A and FU-A, packetization
    mode 1)."""
    return H264Encoder._packetize(H264Encoder._split_bitstream(data))


def vp8_payloads(data: bytes, picture_id: int) -> list[bytes]:
    """RTP payloads of one VP8 frame, with aiortc's payload descriptor (its private
    ``Vp8Encoder._packetize``)."""
    return Vp8Encoder._packetize(data, picture_id)


def take_over_sender(
    sender: RTCRtpSender,
    packer: object,
    on_keyframe_request: Callable[[], None],
    *,
    lean: bool = True,
) -> None:
    """Make ``sender`` hand on what its track gives (``packer`` in place of the encoder that
    aiortc creates lazily, only if none is set: its private ``__encoder``), send keyframe
    requests (PLI/FIR, aiortc's ``_send_keyframe``) to the room's encoder, and, with ``lean``,
    run ``shared_sender``'s loop."""
    sender._RTCRtpSender__encoder = packer  # type: ignore[attr-defined]
    sender._send_keyframe = on_keyframe_request  # type: ignore[method-assign]
    if lean:
        shared_sender(sender)


def opus_only() -> list[RTCRtpCodecCapability]:
    """Capabilities that make aiortc negotiate Opus and nothing else for an audio m-line."""
    return [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.name.lower() == "opus"]


def tap_receiver(receiver: RTCRtpReceiver, on_packet: Callable[[bytes, int], None]) -> None:
    """Hand every RTP packet ``receiver`` gets to ``on_packet(payload, rtp_timestamp)`` as it
    arrives, INSTEAD of aiortc's jitter buffer and decoder thread: a WHIP host's Opus is passed
    through untouched, never decoded (aiortc would decode it, then queue the frames unbounded
    for a track nobody reads). aiortc's DTLS transport routes each packet by calling the
    receiver's ``_handle_rtp_packet(packet, arrival_time_ms=...)``, an aiortc 1.x internal
    covered by tests/media/test_rtc.py."""

    async def handle(packet: RtpPacket, arrival_time_ms: int = 0) -> None:
        on_packet(packet.payload, packet.timestamp)

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]


# -- the shared-packet sender loop ------------------------------------------------------------

_RTP_HEADER = struct.Struct("!BBHLL")
_EXT_HEADER = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class _Sent:
    """What a NACK needs to send one packet again (aiortc keeps whole ``RtpPacket`` objects)."""

    sequence_number: int
    timestamp: int
    marker: int
    payload: bytes
    extensions: HeaderExtensions


def shared_sender(sender: RTCRtpSender) -> None:
    """Run ``sender`` with a leaner copy of aiortc's RTP loop, for senders that only hand on
    shared packets (``attach_sender``): per frame, the header extensions are encoded once (the
    same bytes aiortc's ``HeaderExtensionsMap`` makes, abs-send-time taken at the frame);
    per packet, a 12-byte header is packed, SRTP-protected and handed to the ICE pair's UDP
    transport, with none of aiortc's per-packet objects, logging and awaits in between. RTCP
    (sender reports, NACK retransmissions through ``_retransmit`` below, PLI) works as before.

    aiortc 1.16 internals, each used here and covered by tests/media/test_rtc.py:
    ``RTCRtpSender._run_rtp(codec)`` / ``_retransmit(seq)`` (replaced on the instance), its
    private ``__track``, ``__mid``, ``__rtp_header_extensions_map``, ``__rtp_history``,
    ``__rtp_started`` / ``__rtp_exited``, ``__ntp_timestamp`` / ``__rtp_timestamp`` /
    ``__octet_count`` / ``__packet_count`` (what its sender reports say), ``__rtx_payload_type``
    / ``__rtx_sequence_number``; ``RTCDtlsTransport._tx_srtp`` / ``_state`` / ``transport``;
    ``RTCIceTransport._connection`` and aioice's ``Connection._nominated[1]`` (the selected
    pair: ``protocol.transport``, ``remote_addr``)."""
    negotiated = [0]

    async def run_rtp(codec: RTCRtpCodecParameters) -> None:
        negotiated[0] = codec.payloadType
        await _lean_rtp_loop(sender, codec)

    async def retransmit(sequence_number: int) -> None:
        await _lean_retransmit(sender, sequence_number, negotiated[0])

    sender._run_rtp = run_rtp  # type: ignore[method-assign]
    sender._retransmit = retransmit  # type: ignore[method-assign]


_P = "_RTCRtpSender__"
"""The prefix of RTCRtpSender's private (name-mangled) attributes."""


async def _lean_rtp_loop(sender: RTCRtpSender, codec: RTCRtpCodecParameters) -> None:
    """aiortc's ``RTCRtpSender._run_rtp``, for frames already cut into shared payloads."""
    p = _P
    getattr(sender, p + "rtp_started").set()
    ext_map: HeaderExtensionsMap = getattr(sender, p + "rtp_header_extensions_map")
    history: dict[int, object] = getattr(sender, p + "rtp_history")
    mid = getattr(sender, p + "mid")
    dtls = sender.transport
    connection = dtls.transport._connection
    protect = dtls._tx_srtp.protect
    pt, ssrc = codec.payloadType, sender._ssrc
    seq, origin = random_sequence_number(), random32()
    octets = packets = 0
    try:
        while True:
            track = getattr(sender, p + "track")
            if track is None:
                await asyncio.sleep(0.02)
                continue
            frame = await track.recv()
            if not sender._enabled:
                continue
            if dtls._state is not DtlsState.CONNECTED:
                raise ConnectionError("DTLS is not connected")
            pair = connection._nominated.get(1)
            if pair is None:
                raise ConnectionError("no selected ICE pair")
            send, addr = pair.protocol.transport.sendto, pair.remote_addr
            ts = (origin + frame.timestamp) & 0xFFFFFFFF
            ntp = clock.current_ntp_time()
            ext = HeaderExtensions(mid=mid, abs_send_time=(ntp >> 14) & 0x00FFFFFF)
            profile, value = ext_map.set(ext)
            first = 0x90 if value else 0x80
            block = _EXT_HEADER.pack(profile, len(value) >> 2) + value if value else b""
            last = len(frame.payloads) - 1
            for i, payload in enumerate(frame.payloads):
                marker = 1 if i == last else 0
                head = _RTP_HEADER.pack(first, (marker << 7) | pt, seq, ts, ssrc)
                send(protect(head + block + payload), addr)
                history[seq % RTP_HISTORY_SIZE] = _Sent(seq, ts, marker, payload, ext)
                octets += len(payload)
                packets += 1
                seq = (seq + 1) & 0xFFFF
            setattr(sender, p + "ntp_timestamp", ntp)  # what the sender reports say
            setattr(sender, p + "rtp_timestamp", ts)
            setattr(sender, p + "octet_count", octets)
            setattr(sender, p + "packet_count", packets)
    except (asyncio.CancelledError, ConnectionError, OSError, MediaStreamError):
        pass
    finally:
        track = getattr(sender, p + "track")
        if track is not None:
            track.stop()
            setattr(sender, p + "track", None)
        getattr(sender, p + "rtp_exited").set()


async def _lean_retransmit(sender: RTCRtpSender, sequence_number: int, pt: int) -> None:
    """aiortc's ``RTCRtpSender._retransmit`` (a NACK), from the lean loop's history."""
    p = _P
    sent = getattr(sender, p + "rtp_history").get(sequence_number % RTP_HISTORY_SIZE)
    if not isinstance(sent, _Sent) or sent.sequence_number != sequence_number:
        return
    packet = RtpPacket(
        payload_type=pt,
        marker=sent.marker,
        sequence_number=sent.sequence_number,
        timestamp=sent.timestamp,
        ssrc=sender._ssrc,
        payload=sent.payload,
    )
    packet.extensions = sent.extensions
    rtx_pt = getattr(sender, p + "rtx_payload_type")
    if rtx_pt is not None:
        rtx_seq = getattr(sender, p + "rtx_sequence_number")
        packet = wrap_rtx(
            packet, payload_type=rtx_pt, sequence_number=rtx_seq, ssrc=sender._rtx_ssrc
        )
        setattr(sender, p + "rtx_sequence_number", (rtx_seq + 1) & 0xFFFF)
    await sender.transport._send_rtp(
        packet.serialize(getattr(sender, p + "rtp_header_extensions_map"))
    )
