"""The aiortc seams of the media role, in one place.

aiortc's sender asks its clock twice per RTP packet (the abs-send-time header extension and the
sender-report timestamp), through ``datetime`` arithmetic that costs more than the SRTP
encryption of the packet. ``fast_clock`` swaps in the same NTP value computed from
``time.time()``: identical results (microsecond resolution, as before), a fraction of the cost.
It only ever replaces aiortc's function with an equal one, and only once per process.
"""

from __future__ import annotations

import time

from aiortc import RTCRtpSender, clock
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

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
