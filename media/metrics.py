"""Prometheus metrics of the media role, read from the services when scraped (free when idle).

They appear in the HTTP app's ``GET /metrics`` (the process-wide registry).
"""

from __future__ import annotations

from typing import Any, Protocol

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from media.sessions import SessionBook


class MediaStats(Protocol):
    """What the collector reads from a media role; ``MediaService`` is the one implementation."""

    book: SessionBook

    def stats(self) -> dict[str, Any]:
        """Sessions, encoders, frames encoded, viewer skips and rooms of this process."""
        ...


class _MediaCollector:
    def __init__(self) -> None:
        self.services: list[MediaStats] = []

    def collect(self):  # type: ignore[no-untyped-def]
        sessions = GaugeMetricFamily(
            "liveroom_media_sessions", "open media sessions", labels=["kind"]
        )
        encoders = GaugeMetricFamily(
            "liveroom_media_encoders", "running room encoders (one per room and codec)"
        )
        rooms = GaugeMetricFamily("liveroom_media_rooms", "rooms with media in this process")
        encoded = CounterMetricFamily("liveroom_media_frames_encoded", "frames encoded")
        skips = CounterMetricFamily(
            "liveroom_media_viewer_skips", "times a lagging viewer skipped to a keyframe"
        )
        refused = CounterMetricFamily(
            "liveroom_media_refused", "sessions refused by a limit", labels=["limit"]
        )
        packets = CounterMetricFamily(
            "liveroom_media_packets",
            "encoded packets published to the rooms' feeds (video frames, Opus packets)",
            labels=["kind"],
        )
        st = [s.stats() for s in self.services]
        rooms_now = [r for x in st for r in x["rooms"].values()]
        packets.add_metric(
            ["video"], sum(f["frames"] for r in rooms_now for f in r.get("feeds", {}).values())
        )
        packets.add_metric(["audio"], sum(r.get("audio", {}).get("packets", 0) for r in rooms_now))
        sessions.add_metric(["whep"], sum(x["sessions"]["whep"] for x in st))
        sessions.add_metric(["whip"], sum(x["sessions"]["whip"] for x in st))
        encoders.add_metric([], sum(x["encoders"] for x in st))
        rooms.add_metric([], sum(len(x["rooms"]) for x in st))
        encoded.add_metric([], sum(x["frames_encoded"] for x in st))
        skips.add_metric([], sum(x["viewer_skips"] for x in st))
        for limit in ("process", "user"):
            refused.add_metric([limit], sum(s.book.refused[limit] for s in self.services))
        yield from (sessions, encoders, rooms, encoded, skips, refused, packets)


_collector = _MediaCollector()
REGISTRY.register(_collector)


def watch(service: MediaStats) -> None:
    _collector.services.append(service)


def unwatch(service: MediaStats) -> None:
    if service in _collector.services:
        _collector.services.remove(service)
