"""The aiortc internals media/ relies on, one test each (media/rtc.py names them all): if an
aiortc upgrade moves one, a test here fails before any viewer notices."""

from __future__ import annotations

import asyncio
from array import array

import av
from aiortc import RTCPeerConnection

from media.audio import PACKET_SAMPLES
from media.fanout import AudioViewerTrack, EncodedFrame, Feed, attach_sender
from media.rtc import ntp_now, opus_only, tap_receiver
from tests.media.support import NO_ICE_SERVERS, ToneTrack


async def _connect(sender: RTCPeerConnection, receiver: RTCPeerConnection) -> None:
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)


async def test_a_tapped_receiver_hands_over_opus_packets_and_decodes_nothing() -> None:
    """`tap_receiver`: every RTP packet reaches the tap as sent (Opus, decodable), and aiortc's
    own decoder never sees one (its track stays empty: nothing queues up unread)."""
    host, server = RTCPeerConnection(NO_ICE_SERVERS), RTCPeerConnection(NO_ICE_SERVERS)
    got: list[tuple[bytes, int]] = []
    try:
        host.addTransceiver(ToneTrack(440), direction="sendonly")
        sound = server.addTransceiver("audio", direction="recvonly")
        sound.setCodecPreferences(opus_only())
        tap_receiver(sound.receiver, lambda payload, ts: got.append((payload, ts)))
        await _connect(host, server)
        assert "opus/48000" in server.localDescription.sdp.lower()
        assert "pcmu" not in server.localDescription.sdp.lower()
        for _ in range(100):
            if len(got) >= 25:
                break
            await asyncio.sleep(0.05)
        assert len(got) >= 25, f"only {len(got)} packets reached the tap"
        steps = {(b[1] - a[1]) % (1 << 32) for a, b in zip(got, got[1:], strict=False)}
        assert steps == {PACKET_SAMPLES}  # the publisher's own timestamps, in order

        decoder = av.CodecContext.create("libopus", "r")
        pcm = array("h")
        for payload, _ in got[5:]:
            for frame in decoder.decode(av.Packet(payload)):
                pcm.extend(array("h", bytes(frame.planes[0])[: 2 * frame.samples]))
        assert max(abs(v) for v in pcm) > 3000  # the tone, not silence

        try:
            await asyncio.wait_for(sound.receiver.track.recv(), 0.3)
            raise AssertionError("aiortc decoded a tapped packet")
        except TimeoutError:
            pass
    finally:
        await host.close()
        await server.close()


async def test_an_audio_viewer_sender_sends_shared_packets_as_they_are() -> None:
    """`attach_sender` on an audio sender: the room's Opus packets go out unencoded."""
    feed = Feed("OPUS", 8)
    pc = RTCPeerConnection()
    track = AudioViewerTrack(feed)
    transceiver = pc.addTransceiver(track, direction="sendonly")
    attach_sender(transceiver.sender, feed)
    codec = opus_only()[0]
    pending = asyncio.ensure_future(transceiver.sender._next_encoded_frame(codec))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    frame = EncodedFrame([b"opus-packet"], 48_000, True, 11)
    feed.publish(frame)
    encoded = await pending
    assert encoded.payloads is frame.payloads and encoded.timestamp == 48_000
    track.stop()
    await pc.close()


def test_fast_ntp_clock_matches_aiortc() -> None:
    from aiortc.clock import current_datetime, datetime_to_ntp

    ours, theirs = ntp_now(), datetime_to_ntp(current_datetime())
    assert abs(ours - theirs) < (1 << 32) // 100  # within 10 ms (two clock reads)
