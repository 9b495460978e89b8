"""The room's sound, without a network: the pattern's tone and clicks, Opus round trips, and
the mapping of a publisher's RTP clock onto the room clock."""

from __future__ import annotations

import threading
from array import array

import av
from av.audio.frame import AudioFrame

from media.audio import (
    CLICK_SAMPLES,
    PACKET_SAMPLES,
    RATE,
    OpusEncoder,
    RtpClock,
    Tone,
    ToneSource,
    click_onsets,
)
from media.sources import Paced, PatternSource


def test_the_tone_clicks_once_a_second_at_the_whole_second() -> None:
    pcm = Tone(440).samples(0, 3 * RATE)
    onsets = click_onsets(pcm)
    assert [round(i / RATE, 3) for i in onsets] == [0.0, 1.0, 2.0]
    assert max(abs(v) for v in pcm[CLICK_SAMPLES + 10 : RATE - 10]) < 0.25 * 32768  # the tone
    assert Tone(440).samples(RATE - 100, 200) == pcm[RATE - 100 : RATE + 100]  # across seconds


def test_a_click_survives_opus_within_a_few_milliseconds() -> None:
    tone, enc = Tone(440), OpusEncoder(64_000)
    dec = av.CodecContext.create("libopus", "r")
    pcm = array("h")
    for n in range(2 * RATE // PACKET_SAMPLES):
        frame = AudioFrame(format="s16", layout="mono", samples=PACKET_SAMPLES)
        frame.planes[0].update(tone.samples(n * PACKET_SAMPLES).tobytes())
        frame.sample_rate = RATE
        [packet] = enc.encode(frame)  # one 20 ms packet per frame, no buffering
        for out in dec.decode(av.Packet(packet)):
            channels = len(out.layout.channels)
            pcm.extend(array("h", bytes(out.planes[0])[: 2 * out.samples * channels])[::channels])
    onsets = click_onsets(pcm)
    assert len(onsets) == 2
    assert abs(onsets[1] - onsets[0] - RATE) < RATE // 1000  # still one second apart
    assert onsets[1] - RATE < 0.010 * RATE  # the codec's delay: under 10 ms


def test_the_pattern_sound_starts_with_its_picture() -> None:
    pattern = PatternSource(64, 48, 30)
    pattern.start_clocks(1000.0)
    assert pattern.clock.t0 == pattern.audio.clock.t0 == 1000.0  # type: ignore[union-attr]
    pattern.start_clocks(2000.0)  # a running clock keeps its start
    assert pattern.clock.t0 == 1000.0


def test_the_tone_source_paces_numbered_frames() -> None:
    clock = Paced(RATE / PACKET_SAMPLES)
    src = ToneSource(Tone(440), clock)
    stop = threading.Event()
    items = [src.next(stop) for _ in range(3)]
    assert all(i is not None for i in items)
    assert [round(i.at - items[0].at, 3) for i in items] == [0.0, 0.02, 0.04]  # type: ignore[union-attr]
    assert bytes(items[0].frame.planes[0])[:20] == Tone(440).samples(0, 10).tobytes()  # type: ignore[union-attr]
    stop.set()
    assert src.next(stop) is None


def test_a_publishers_timestamps_keep_their_spacing_on_the_room_clock() -> None:
    clock = RtpClock()
    first = clock.room_timestamp((1 << 32) - 480, arrival_s=10.0)
    assert first == 10 * RATE
    assert clock.room_timestamp(480, arrival_s=99.0) == 10 * RATE + 960  # wrapped, same step
    assert clock.room_timestamp(480 + 48_000, arrival_s=0.0) == 11 * RATE + 960  # arrival ignored
