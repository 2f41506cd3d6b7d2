"""Prometheus metrics, read from the supervisor's own state at scrape time.

They read it through `stage_view.SupervisorView`, never the supervisor module itself: the
supervisor builds the metrics, so an import back would be a cycle.

Counters by outcome come straight from each stage's `ctx.counters`, the same numbers `/status`,
the logs and the CLI show: one source of truth, no double bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dahell.stage_view import SupervisorView
from dahell.stages.base import StageState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StageCollector(Collector):
    def __init__(self, supervisor: SupervisorView) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        sup = self.supervisor
        units = CounterMetricFamily(
            "dahell_units",
            "Units of work by stage, outcome and reason",
            labels=["stage", "outcome", "reason"],
        )
        states = GaugeMetricFamily(
            "dahell_stage_state", "1 for the stage's current state", labels=["stage", "state"]
        )
        restarts = CounterMetricFamily(
            "dahell_stage_restarts",
            "Stage restarts (crash, stall, lost database)",
            labels=["stage"],
        )
        disk = GaugeMetricFamily(
            "dahell_stage_disk_full", "1 while the stage retries on a full disk", labels=["stage"]
        )
        for name, rt in sup.runtimes.items():
            disk.add_metric([name], 1.0 if rt.disk_full else 0.0)
            for (outcome, reason), n in rt.ctx.counters.items():
                units.add_metric([name, outcome, reason], n)
            for state in StageState:
                states.add_metric([name, state.value], 1.0 if rt.state == state else 0.0)
            restarts.add_metric([name], rt.restarts)
        depth = GaugeMetricFamily("dahell_queue_depth", "Messages waiting", labels=["queue"])
        for name, queue in sup.queues.items():
            depth.add_metric([name], queue.qsize())
        up = GaugeMetricFamily("dahell_up", "1 while every stage is healthy")
        up.add_metric([], 1.0 if sup.healthy()[0] else 0.0)
        yield from (units, states, restarts, disk, depth, up)


class Metrics:
    def __init__(self, supervisor: SupervisorView) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StageCollector(supervisor))
        self._lag = Gauge(
            "dahell_event_loop_lag_seconds",
            "Last measured event-loop lag",
            registry=self.registry,
        )
        self._blocked = Counter(
            "dahell_event_loop_blocked",
            "Times the loop lagged past supervisor.loop_lag_warn_ms",
            registry=self.registry,
        )
        self._batches = Histogram(
            "dahell_batch_duration_seconds",
            "Time to write one batch",
            ["stage"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self._supervisor = supervisor

    def observe_batch(self, stage: str, seconds: float) -> None:
        self._batches.labels(stage).observe(seconds)

    def loop_lag(self, seconds: float) -> None:
        self._lag.set(seconds)
        warn = self._supervisor.config.supervisor.loop_lag_warn_ms / 1000
        if seconds >= warn:
            self._blocked.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
