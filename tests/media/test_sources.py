"""Room sources: the pattern's bar code survives encoding; files are demuxed (not decoded),
looped with a timeline that keeps going, and refused when they cannot be sent as they are."""

from __future__ import annotations

import fractions
import threading
import time
from array import array
from pathlib import Path

import av
import pytest
from av.audio.frame import AudioFrame

from media.audio import PACKET_SAMPLES, RATE, Tone
from media.sources import FileSource, PatternSource, read_barcode, stamp_barcode


def _write(
    path: Path, encoder: str, frames: int = 15, fps: int = 30, sound: str | None = None
) -> None:
    """A small video file; with ``sound`` (an audio encoder: libopus, aac) the pattern's tone
    beside it, as long as the video."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(encoder, rate=fps)
        audio = out.add_stream(sound, rate=RATE) if sound else None
        if audio is not None:
            audio.layout = "mono"
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.time_base = fractions.Fraction(1, fps)
        stream.codec_context.gop_size = 5
        if encoder == "libx264":
            stream.codec_context.profile = "Baseline"
            stream.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency"}
        src = PatternSource(160, 120, fps)
        for n in range(frames):
            frame = src.render(n)
            frame.pts = n
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if audio is not None:
            size = audio.codec_context.frame_size or PACKET_SAMPLES
            tone = Tone(440)
            for k in range(frames * RATE // fps // size):
                chunk = AudioFrame(
                    format=audio.codec_context.format.name, layout="mono", samples=size
                )
                pcm = array("h", tone.samples(k * size, size))
                if chunk.format.name == "fltp":
                    chunk.planes[0].update(array("f", (v / 32768 for v in pcm)).tobytes())
                else:
                    chunk.planes[0].update(pcm.tobytes())
                chunk.sample_rate, chunk.pts = RATE, k * size
                out.mux(audio.encode(chunk))
            out.mux(audio.encode(None))


def test_barcode_round_trip() -> None:
    src = PatternSource(320, 240, 30)
    frame = src.render(0)
    for value in (0, 1, 12345, (1 << 24) - 1):
        stamp_barcode(frame, value)
        assert read_barcode(frame) == value


@pytest.mark.parametrize(
    ("name", "encoder", "codec"),
    [("a.ts", "libx264", "H264"), ("a.mp4", "libx264", "H264"), ("a.webm", "libvpx", "VP8")],
)
def test_file_is_looped_on_a_continuing_timeline(
    tmp_path: Path, name: str, encoder: str, codec: str
) -> None:
    path = tmp_path / name
    _write(path, encoder)
    src = FileSource(str(path))
    assert src.codec == codec
    t0 = time.monotonic()
    stop = threading.Event()
    items = [src.next(stop) for _ in range(40)]  # 15-frame file: looped twice
    took = time.monotonic() - t0
    assert all(i is not None and i.packet is not None for i in items)
    times = [i.at for i in items]  # type: ignore[union-attr]
    assert times == sorted(times)
    assert 39 / 30 - 0.1 < times[-1] - times[0] < 39 / 30 + 0.1  # paced at the file's rate
    assert took > 1.0
    assert src.loops == 2
    assert items[0].keyframe and items[15].keyframe  # type: ignore[union-attr]
    data = bytes(items[0].packet)  # type: ignore[union-attr]
    if codec == "H264":
        assert data.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01"))  # Annex B, even from MP4
    dec = av.CodecContext.create(codec.lower(), "r")
    decoded = [f for i in items[:15] for f in dec.decode(i.packet)]  # type: ignore[union-attr]
    assert [read_barcode(f) for f in decoded[:3]] == [0, 1, 2]
    src.close()


def test_pattern_keeps_its_rate_and_stops_at_once() -> None:
    src = PatternSource(160, 120, 30)
    stop = threading.Event()
    items = [src.next(stop) for _ in range(16)]
    times = [i.at for i in items]  # type: ignore[union-attr]
    assert abs((times[-1] - times[0]) - 15 / 30) < 0.02
    assert [read_barcode(i.frame) for i in items] == list(range(16))  # type: ignore[union-attr,arg-type]
    stop.set()
    t0 = time.monotonic()
    assert src.next(stop) is None and time.monotonic() - t0 < 0.1


def test_files_that_cannot_be_sent_as_they_are_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FileSource(str(tmp_path / "missing.ts"))
    mpeg4 = tmp_path / "old.mkv"
    _write(mpeg4, "mpeg4")
    with pytest.raises(ValueError, match="H.264 or VP8"):
        FileSource(str(mpeg4))


@pytest.mark.parametrize(
    ("name", "video", "sound"), [("s.webm", "libvpx", "libopus"), ("s.ts", "libx264", "aac")]
)
def test_a_files_sound_comes_as_opus_beside_its_pictures(
    tmp_path: Path, name: str, video: str, sound: str
) -> None:
    """Opus in WebM is passed on as it is; AAC is encoded to Opus once. Both come on the
    file's timeline, interleaved with its frames, and keep coming when the file loops."""
    path = tmp_path / name
    _write(path, video, frames=30, sound=sound)
    src = FileSource(str(path))
    stop = threading.Event()
    items = [src.next(stop) for _ in range(200)]
    assert all(i is not None for i in items)
    pictures = [i for i in items if i.packet is not None]  # type: ignore[union-attr]
    sounds = [i for i in items if i.sound is not None]  # type: ignore[union-attr]
    assert len(pictures) > 30 and len(sounds) > 30 and src.loops >= 1
    times = [i.at for i in items]  # type: ignore[union-attr]
    assert all(b >= a - 0.1 for a, b in zip(times, times[1:], strict=False))  # interleaved
    dec = av.CodecContext.create("libopus", "r")
    pcm = array("h")
    for item in sounds[3:]:
        for packet in item.sound:  # type: ignore[union-attr]
            for frame in dec.decode(av.Packet(packet)):
                pcm.extend(array("h", bytes(frame.planes[0])[: 2 * frame.samples]))
    assert max(abs(v) for v in pcm) > 3000  # the tone, through the file
    src.close()
