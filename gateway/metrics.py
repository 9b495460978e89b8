"""Prometheus metrics of a gateway process, read from its hub, reader and write batcher when
scraped (``GET /metrics`` on the gateway port).

Values are plain counters bumped on the hot path (``engine.stats``) and read by this collector
at scrape time, so serving viewers pays an addition per event, nothing more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import REGISTRY
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from engine.bus import RoomReader
from engine.pipeline import ScriptBatcher
from engine.stats import Histogram
from gateway.hub import RoomHub


class Watched(Protocol):
    """What the collector reads of a gateway, at scrape time."""

    hub: RoomHub
    reader: RoomReader
    writes: ScriptBatcher


def histogram(name: str, doc: str, hists: list[Histogram]) -> HistogramMetricFamily:
    """One Prometheus histogram from the same-bounded ``hists`` of every watched object."""
    buckets: dict[str, float] = {}
    for h in hists:
        for le, n in h.cumulative():
            buckets[le] = buckets.get(le, 0.0) + n
    total = sum(h.sum for h in hists)
    return HistogramMetricFamily(name, doc, buckets=list(buckets.items()), sum_value=total)


def _connections(gateways: list[Watched]) -> GaugeMetricFamily:
    by: Counter[tuple[str, str]] = Counter()
    for g in gateways:
        for rid, room in g.hub.rooms.items():
            for conn in room.conns:
                by[rid, conn.session.access.value] += 1
    m = GaugeMetricFamily(
        "liveroom_gateway_connections", "open viewer connections", labels=["room", "access"]
    )
    for (rid, access), n in sorted(by.items()):
        m.add_metric([rid, access], n)
    return m


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    m = CounterMetricFamily(name, doc)
    m.add_metric([], value)
    return m


class _GatewayCollector:
    def __init__(self) -> None:
        self.gateways: list[Watched] = []

    def collect(self) -> Iterator[Metric]:
        gws = self.gateways
        if not gws:  # a process without the gateway role
            return
        stats = [g.hub.stats for g in gws]
        yield _connections(gws)
        rooms = GaugeMetricFamily("liveroom_gateway_rooms", "rooms with local viewers")
        rooms.add_metric([], sum(len(g.hub.rooms) for g in gws))
        yield rooms
        yield _counter(
            "liveroom_gateway_events_in",
            "events read from Redis Streams",
            sum(s.events_in for s in stats),
        )
        yield _counter(
            "liveroom_gateway_events_delivered",
            "events delivered in shared tick frames, once per connection",
            sum(g.hub.events_delivered for g in gws),
        )
        yield _counter(
            "liveroom_gateway_frames",
            "shared tick frames written",
            sum(g.hub.frames_written for g in gws),
        )
        yield _counter(
            "liveroom_gateway_frames_written",
            "every frame written to viewers (tick frames, replies, catch-up)",
            sum(s.frames for s in stats),
        )
        yield _counter(
            "liveroom_gateway_bytes_written",
            "bytes of those frames",
            sum(s.bytes for s in stats),
        )
        yield histogram(
            "liveroom_gateway_tick_seconds", "duration of one tick's flush", [s.tick for s in stats]
        )
        yield from self._outcomes(gws)
        yield from self._redis(gws)

    def _outcomes(self, gws: list[Watched]) -> Iterator[Metric]:
        closes: Counter[int] = Counter()
        ops: Counter[tuple[str, str]] = Counter()
        for g in gws:
            closes.update(g.hub.stats.closes)
            ops.update(g.hub.stats.ops)
        m = CounterMetricFamily(
            "liveroom_gateway_closes",
            "connections the gateway closed, by close code (4408 slow consumer, 4403, ...)",
            labels=["code"],
        )
        for code, n in sorted(closes.items()):
            m.add_metric([str(code)], n)
        yield m
        m = CounterMetricFamily(
            "liveroom_gateway_ops", "ops answered, by op and outcome", labels=["op", "outcome"]
        )
        for (op, outcome), n in sorted(ops.items()):
            m.add_metric([op, outcome], n)
        yield m
        m = CounterMetricFamily(
            "liveroom_sale_attempts", "`buy` ops, by outcome", labels=["outcome"]
        )
        for (op, outcome), n in sorted(ops.items()):
            if op == "buy":
                m.add_metric([outcome], n)
        yield m

    def _redis(self, gws: list[Watched]) -> Iterator[Metric]:
        yield histogram(
            "liveroom_redis_trip_seconds",
            "one pipelined round trip of writes and joins' reads",
            [g.writes.latency for g in gws],
        )
        m = CounterMetricFamily(
            "liveroom_redis_errors", "failed Redis round trips", labels=["source", "kind"]
        )
        errors: Counter[str] = Counter()
        for g in gws:
            errors.update(g.writes.errors)
        for kind, n in sorted(errors.items()):
            m.add_metric(["writes", kind], n)
        m.add_metric(["reader", "any"], sum(g.reader.errors for g in gws))
        yield m
        yield _counter(
            "liveroom_gateway_stream_reads",
            "XREAD calls of the reader",
            sum(g.reader.reads for g in gws),
        )


_collector = _GatewayCollector()
REGISTRY.register(_collector)


def watch(gateway: Watched) -> None:
    _collector.gateways.append(gateway)
