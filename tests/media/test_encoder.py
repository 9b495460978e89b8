"""The room encoder (no network): keyframes every interval, forced keyframes rate-limited,
timestamps on the 90 kHz room clock, a new context when the input size changes."""

from __future__ import annotations

import av

from engine.settings import MediaSettings
from media.encoder import TIME_BASE, VideoEncoder
from media.sources import PatternSource, read_barcode


def _encode(
    codec: str, n: int, **kw: object
) -> tuple[VideoEncoder, list[tuple[int, bool, av.Packet]]]:
    s = MediaSettings(width=160, height=120, fps=30, keyframe_interval_s=1.0, **kw)  # type: ignore[arg-type]
    enc = VideoEncoder(codec, s)
    src = PatternSource(160, 120, 30)
    out = []
    for i in range(n):
        for packet, key in enc.encode(src.render(i), i * 3000):
            out.append((i, key, packet))
    return enc, out


def test_keyframe_every_interval_and_decodable_output() -> None:
    for codec in ("H264", "VP8"):
        _, out = _encode(codec, 65)
        assert [i for i, key, _ in out if key] == [0, 30, 60], codec
        assert all(p.time_base == TIME_BASE and p.pts == i * 3000 for i, _, p in out)
        dec = av.CodecContext.create("h264" if codec == "H264" else "vp8", "r")
        frames = [f for _, _, p in out for f in dec.decode(p)]
        assert [read_barcode(f) for f in frames[:5]] == [0, 1, 2, 3, 4]


def test_forced_keyframes_are_rate_limited() -> None:
    enc, _ = _encode("H264", 3, keyframe_request_gap_s=0.5)
    assert enc.request_keyframe(100.0)
    assert not enc.request_keyframe(100.2)
    assert enc.request_keyframe(100.6)
    src = PatternSource(160, 120, 30)
    [(_, key)] = enc.encode(src.render(5), 5 * 3000)
    assert key


def test_size_change_reopens_with_a_keyframe() -> None:
    enc, _ = _encode("VP8", 3)
    big = PatternSource(320, 240, 30)
    [(packet, key)] = enc.encode(big.render(0), 9000)
    assert key
    dec = av.CodecContext.create("vp8", "r")
    [frame] = dec.decode(packet)
    assert (frame.width, frame.height) == (320, 240)
