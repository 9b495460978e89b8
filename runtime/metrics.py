"""Prometheus metrics every process has, whatever its roles: which roles it runs, and what its
shared services did (lottery draws). The roles add their own collectors (gateway/metrics.py,
media/metrics.py); the API's ``GET /metrics`` and the gateway port's serve them all."""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from engine.services import Services


class _ProcessCollector:
    def __init__(self) -> None:
        self.watched: list[tuple[Services, str]] = []

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "liveroom_process",
            "1 for this process, labelled with its roles",
            labels=["role", "pid"],
        )
        draws = CounterMetricFamily("liveroom_lottery_draws", "lotteries this process drew")
        drawn = CounterMetricFamily(
            "liveroom_lottery_entrants_drawn", "entrants of the lotteries this process drew"
        )
        for _, role in self.watched:
            info.add_metric([role, str(os.getpid())], 1)
        draws.add_metric([], sum(s.lotteries.draws for s, _ in self.watched))
        drawn.add_metric([], sum(s.lotteries.entrants_drawn for s, _ in self.watched))
        yield from (info, draws, drawn)


_collector = _ProcessCollector()
REGISTRY.register(_collector)


def watch(services: Services, role: str) -> None:
    _collector.watched.append((services, role))


def unwatch(services: Services) -> None:
    _collector.watched = [w for w in _collector.watched if w[0] is not services]
