"""The aiortc internals media/ relies on, one test each (media/rtc.py names them all): if an
aiortc upgrade moves one, a test here fails before any viewer notices."""

from __future__ import annotations

import asyncio
from array import array
from typing import Any

import av
from aiortc import RTCPeerConnection

from media.audio import PACKET_SAMPLES
from media.fanout import AudioViewerTrack, EncodedFrame, Feed, ViewerTrack, attach_sender
from media.rtc import codec_preferences, ntp_now, opus_only, tap_receiver
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


async def test_the_lean_sender_loop_sends_shared_packets_and_resends_on_nack() -> None:
    """`shared_sender`: each shared payload goes out once, in order, with its own RTP header
    (marker on a frame's last packet, the frame's timestamp), and a NACK (`_retransmit`) sends
    the same payload again as RTX; the sender reports carry the last packet's timestamp."""
    import struct

    server, viewer = RTCPeerConnection(NO_ICE_SERVERS), RTCPeerConnection(NO_ICE_SERVERS)
    feed = Feed("H264", 16)
    track = ViewerTrack(feed)
    got: list[tuple[int, int, int, bytes, int]] = []
    try:
        t = server.addTransceiver(track, direction="sendonly")
        t.setCodecPreferences(codec_preferences("H264"))
        attach_sender(t.sender, feed)  # lean by default
        listen = viewer.addTransceiver("video", direction="recvonly")

        async def capture(packet: Any, arrival_time_ms: int = 0) -> None:
            got.append(
                (
                    packet.sequence_number,
                    packet.timestamp,
                    packet.marker,
                    packet.payload,
                    packet.ssrc,
                )
            )

        listen.receiver._handle_rtp_packet = capture  # type: ignore[method-assign]
        await _connect(viewer, server)
        for _ in range(100):
            if server.connectionState == "connected":
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the sender's loop waits on the feed now
        frames = [
            EncodedFrame([f"p{k}-{i}".encode() for i in range(2)], 3000 * k, True, 4)
            for k in range(5)
        ]
        for frame in frames:
            feed.publish(frame)
            await asyncio.sleep(0.01)
        for _ in range(50):
            if len(got) >= 10:
                break
            await asyncio.sleep(0.02)
        assert [g[3] for g in got] == [p for f in frames for p in f.payloads]
        seqs = [g[0] for g in got]
        assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
        assert [g[2] for g in got] == [0, 1] * 5  # the marker ends each frame
        steps = {(got[i + 2][1] - got[i][1]) & 0xFFFFFFFF for i in range(0, 8, 2)}
        assert steps == {3000}  # the frames' own timestamps, plus the sender's origin
        sender = t.sender
        assert sender._RTCRtpSender__rtp_timestamp == got[-1][1]  # type: ignore[attr-defined]
        assert sender._RTCRtpSender__packet_count == 10  # type: ignore[attr-defined]

        await sender._retransmit(seqs[3])  # a NACK for the 4th packet
        for _ in range(50):
            if len(got) > 10:
                break
            await asyncio.sleep(0.02)
        seq, ts, _, payload, ssrc = got[10]
        assert ssrc == sender._rtx_ssrc and ts == got[3][1]  # RTX (RFC 4588), same timestamp
        assert payload == struct.pack("!H", seqs[3]) + got[3][3]  # the original seq, then data
    finally:
        track.stop()
        await server.close()
        await viewer.close()


def test_aiortcs_packetizers_cut_h264_and_vp8_into_rtp_sized_payloads() -> None:
    """`h264_payloads` / `vp8_payloads`: a real encoded frame comes out as payloads no bigger
    than aiortc's packet size (1300 bytes), which aiortc's depacketizers put back together."""
    from aiortc.codecs import depayload
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from engine.settings import MediaSettings
    from media.encoder import VideoEncoder
    from media.rtc import h264_payloads, vp8_payloads
    from media.sources import PatternSource

    frame = PatternSource(320, 240, 30).render(7)
    for codec, cut in (("H264", h264_payloads), ("VP8", lambda d: vp8_payloads(d, 1))):
        [(packet, key)] = VideoEncoder(codec, MediaSettings(width=320, height=240)).encode(frame, 0)
        data = bytes(packet)
        payloads = cut(data)
        assert key and len(payloads) > 1 and all(len(p) <= 1300 for p in payloads)
        params = RTCRtpCodecParameters(mimeType=f"video/{codec}", clockRate=90000, payloadType=96)
        rebuilt = b"".join(depayload(params, p) for p in payloads)
        if codec == "VP8":
            assert rebuilt == data
        else:  # Annex B again, NAL by NAL (start codes as the depacketizer writes them)
            assert rebuilt.replace(b"\x00\x00\x00\x01", b"") == data.replace(
                b"\x00\x00\x00\x01", b""
            ).replace(b"\x00\x00\x01", b"")
