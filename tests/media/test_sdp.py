"""Offer checks before any peer connection (pure): what is refused, and the codec choice."""

from __future__ import annotations

import pytest
from aiortc import RTCPeerConnection

from engine.errors import LiveroomError
from media.sdp import WHEP_DIRECTIONS, WHIP_DIRECTIONS, choose_codec, read_offer
from tests.media.support import NO_ICE_SERVERS


async def _offer(*kinds_directions: tuple[str, str]) -> bytes:
    pc = RTCPeerConnection(NO_ICE_SERVERS)
    for kind, direction in kinds_directions:
        pc.addTransceiver(kind, direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp.encode()


async def test_a_recvonly_video_offer_is_read() -> None:
    offer = read_offer(
        await _offer(("video", "recvonly"), ("audio", "recvonly")), directions=WHEP_DIRECTIONS
    )
    assert offer.video_codecs == ("VP8", "H264")
    assert offer.has_audio


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "bad_sdp"),
        (b"hello", "bad_sdp"),
        (b"\xff\xfe\x00", "bad_sdp"),
        (b"v=0\r\nm=video abc\r\n", "bad_sdp"),
        (b"v=0\r\n", "no_video"),
        (b"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "no_video"),
    ],
)
def test_bad_offers(body: bytes, code: str) -> None:
    with pytest.raises(LiveroomError) as info:
        read_offer(body, directions=WHEP_DIRECTIONS)
    assert info.value.code == code
    assert info.value.status == (400 if code == "bad_sdp" else 422)


async def test_direction_must_fit_the_endpoint() -> None:
    sends = await _offer(("video", "sendonly"))
    with pytest.raises(LiveroomError) as info:
        read_offer(sends, directions=WHEP_DIRECTIONS)
    assert info.value.code == "no_video"
    assert read_offer(sends, directions=WHIP_DIRECTIONS).video_codecs


async def test_missing_ice_or_dtls_is_refused() -> None:
    good = (await _offer(("video", "recvonly"))).decode()
    for prefix in ("a=ice-pwd", "a=fingerprint"):
        bad = "\r\n".join(x for x in good.split("\r\n") if not x.startswith(prefix))
        with pytest.raises(LiveroomError) as info:
            read_offer(bad.encode(), directions=WHEP_DIRECTIONS)
        assert info.value.code == "bad_sdp"


def test_codec_choice_prefers_a_running_encoder() -> None:
    assert choose_codec(("VP8", "H264"), ("H264", "VP8")) == "H264"  # server preference
    assert choose_codec(("VP8", "H264"), ("H264", "VP8"), {"VP8"}) == "VP8"  # no new encoder
    assert choose_codec(("VP8",), ("H264", "VP8"), {"H264"}) == "VP8"
    with pytest.raises(LiveroomError) as info:
        choose_codec(("VP8",), ("H264",))  # e.g. an H.264 file
    assert (info.value.status, info.value.code) == (422, "unsupported_codec")
