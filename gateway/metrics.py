"""Prometheus metrics of a gateway process, read from the hub when scraped.

Values are read by callbacks at scrape time, so the hot path pays nothing for them.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from engine.bus import RoomReader
from gateway.hub import RoomHub


class Watched(Protocol):
    """What the collector reads of a gateway (its hub and its reader), at scrape time."""

    hub: RoomHub
    reader: RoomReader


class _GatewayCollector:
    def __init__(self) -> None:
        self.gateways: list[Watched] = []

    def collect(self):  # type: ignore[no-untyped-def]
        conns = GaugeMetricFamily("liveroom_gateway_connections", "open viewer connections")
        rooms = GaugeMetricFamily("liveroom_gateway_rooms", "rooms with local viewers")
        frames = CounterMetricFamily("liveroom_gateway_frames", "shared tick frames written")
        events = CounterMetricFamily(
            "liveroom_gateway_events_delivered", "events delivered in shared tick frames"
        )
        reads = CounterMetricFamily("liveroom_gateway_stream_reads", "XREAD calls of the reader")
        conns.add_metric([], sum(g.hub.connection_count for g in self.gateways))
        rooms.add_metric([], sum(len(g.hub.rooms) for g in self.gateways))
        frames.add_metric([], sum(g.hub.frames_written for g in self.gateways))
        events.add_metric([], sum(g.hub.events_delivered for g in self.gateways))
        reads.add_metric([], sum(g.reader.reads for g in self.gateways))
        yield from (conns, rooms, frames, events, reads)


_collector = _GatewayCollector()
REGISTRY.register(_collector)


def watch(gateway: Watched) -> None:
    _collector.gateways.append(gateway)
