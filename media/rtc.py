"""The aiortc seams of the media role, in one place.

aiortc's sender asks its clock twice per RTP packet (the abs-send-time header extension and the
sender-report timestamp), through ``datetime`` arithmetic that costs more than the SRTP
encryption of the packet. ``fast_clock`` swaps in the same NTP value computed from
``time.time()``: identical results (microsecond resolution, as before), a fraction of the cost.
It only ever replaces aiortc's function with an equal one, and only once per process.

Every other aiortc internal the media role relies on is named here too, each with a test in
tests/media/test_rtc.py: ``attach_sender`` (media/fanout.py: a sender's encoder and keyframe
hook) and ``tap_receiver`` (a receiver's RTP entry point); pyproject.toml pins aiortc to the
versions those tests cover.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiortc import RTCRtpReceiver, RTCRtpSender, clock
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.rtp import RtpPacket

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
