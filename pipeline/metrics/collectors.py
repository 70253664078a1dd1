"""The `pipeline_*` metrics (docs/metrics.md lists them) and the registry each process serves.

`StateCollector` is a Prometheus custom collector: each scrape asks it, and it answers from a
`StateSnapshot` it keeps until the state database changes (`ChangeProbe`), so a ledger of a
million rows is read once per change, however many scrapers ask. What depends on the clock and
the config only (when each timetable entry last fell due, its max_lateness, whether this process
holds the scheduler lock) is worked out on every scrape, without reading the database.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from pipeline.config import Config
from pipeline.errors import StateError
from pipeline.metrics.changes import ChangeProbe
from pipeline.metrics.due import DueTimes
from pipeline.metrics.state import LATENCY_BUCKETS, StateSnapshot, read_snapshot
from pipeline.models import Status
from pipeline.store.events import EventKind
from pipeline.store.runs import STALE_AFTER
from pipeline.workers.app import QUEUE
from pipeline.workers.queue import QueueStatus, queue_status

log = logging.getLogger(__name__)

RECENT_EDITIONS = 10      # editions with a series of their own in pipeline_edition_deliveries


class StateCollector:
    """The metrics read from the state database and the timetable of `config`. Thread-safe."""

    def __init__(self, config: Config, engine: Engine, *, recent_editions: int = RECENT_EDITIONS) -> None:
        self.config = config
        self.engine = engine
        self.recent_editions = recent_editions
        self._probe = ChangeProbe(engine)
        self._lock = threading.Lock()
        self._snapshot: StateSnapshot | None = None
        self._due = DueTimes(config.timezone)

    def snapshot(self) -> StateSnapshot:
        """The state database as it is now: the kept snapshot unless it changed since. The
        change is looked at before reading, so a commit during the read makes the next scrape
        read again. Raises StateError when the database cannot be read."""
        # Held while reading: a second scraper waits for the first's pass and shares it.
        with self._lock:
            if self._probe.changed() or self._snapshot is None:
                self._snapshot = None       # a read that fails keeps nothing: the next one reads
                self._snapshot = read_snapshot(self.engine)
            return self._snapshot

    def describe(self) -> list[Metric]:
        """The families without samples: registering the collector reads nothing."""
        return [*self._families(None, datetime.now(UTC)), *self._queue(None)]

    def collect(self) -> Iterator[Metric]:
        """The families with this scrape's samples."""
        try:
            snap: StateSnapshot | None = self.snapshot()
        except (StateError, SQLAlchemyError) as exc:
            # A scrape that fails shows nothing at all; this one shows the database is down.
            log.warning("metrics: cannot read the state database: %s", exc)
            snap = None
        yield from self._families(snap, datetime.now(UTC))
        yield from self._queue(self._read_queue())

    def _read_queue(self) -> QueueStatus | None:
        """procrastinate's queue (`execution: workers`), read on every scrape: its heartbeats and
        jobs move without a ledger change. None without one, or when it cannot be read."""
        try:
            return queue_status(self.engine, stalled_after=self.config.workers.stalled_after)
        except (StateError, SQLAlchemyError) as exc:
            log.warning("metrics: cannot read the delivery queue: %s", exc)
            return None

    def _queue(self, queue: QueueStatus | None) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("pipeline_jobs", "Delivery jobs (procrastinate) by queue and state",
                                 labels=["queue", "state"])
        oldest = GaugeMetricFamily("pipeline_jobs_oldest_waiting_seconds",
                                   "Seconds the longest-waiting due job of each queue has waited (0: none)",
                                   labels=["queue"])
        alive = GaugeMetricFamily("pipeline_workers_alive",
                                  "`pipeline worker` processes with a recent heartbeat")
        stalled = GaugeMetricFamily("pipeline_jobs_stalled",
                                    "Running jobs whose worker has no recent heartbeat")
        if queue is not None:
            counted = {q.queue: q for q in queue.queues}
            # The delivery queue always, 0 included: a series that appears with its first job
            # would hide that job from delta().
            for name in sorted({QUEUE, *counted}):
                q = counted.get(name)
                for state in ("waiting", "scheduled", "running", "failed", "succeeded", "cancelled"):
                    jobs.add_metric([name, state], getattr(q, state) if q is not None else 0)
                oldest.add_metric([name], (q.oldest_waiting or 0.0) if q is not None else 0.0)
            alive.add_metric([], len(queue.alive))
            stalled.add_metric([], queue.stalled)
        yield from (jobs, oldest, alive, stalled)

    def _families(self, snap: StateSnapshot | None, now: datetime) -> Iterator[Metric]:
        up = GaugeMetricFamily("pipeline_state_up", "1 if the state database could be read for this scrape")
        up.add_metric([], 1 if snap is not None else 0)
        yield up
        yield from self._ledger(snap or StateSnapshot())
        yield from self._timetable(snap or StateSnapshot(), now)
        yield from self._scheduler(snap or StateSnapshot(), now)

    def _ledger(self, snap: StateSnapshot) -> Iterator[Metric]:
        total = GaugeMetricFamily("pipeline_deliveries", "Ledger rows by channel and status",
                                  labels=["channel", "status"])
        counted = snap.by_channel()
        # Every status of every channel, 0 included: a series that appears with its first failure
        # would hide that failure from delta().
        channels = sorted({*self.config.channels, *(c for c, _ in counted)})
        for channel in channels:
            for status in sorted({*(s.value for s in Status), *(s for c, s in counted if c == channel)}):
                total.add_metric([channel, status], counted.get((channel, status), 0))
        yield total
        queue = GaugeMetricFamily("pipeline_queue_depth", "Ledger rows waiting to be sent (status pending)",
                                  labels=["channel"])
        pending: dict[str, int] = {c: 0 for c in self.config.channels}
        for (channel, status), n in snap.by_channel().items():
            pending.setdefault(channel, 0)
            if status == Status.PENDING.value:
                pending[channel] += n
        for channel, n in sorted(pending.items()):
            queue.add_metric([channel], n)
        yield queue
        editions = GaugeMetricFamily(
            "pipeline_edition_deliveries",
            f"Ledger rows of the {self.recent_editions} editions planned last, by channel, edition, status",
            labels=["channel", "edition", "status"])
        recent = set(snap.recent_editions(self.recent_editions))
        for (channel, edition, status), n in sorted(snap.rows.items()):
            if edition in recent:
                editions.add_metric([channel, edition, status], n)
        yield editions
        latency = HistogramMetricFamily(
            "pipeline_send_latency_seconds",
            "Seconds from a delivery's planning in the ledger to its send, per channel",
            labels=["channel"])
        for channel, hist in sorted(snap.latency.items()):
            cumulative, running = [], 0
            for bound, n in zip((*LATENCY_BUCKETS, float("inf")), hist.counts, strict=True):
                running += n
                cumulative.append(("+Inf" if bound == float("inf") else _le(bound), running))
            latency.add_metric([channel], cumulative, hist.total)
        yield latency
        events = CounterMetricFamily("pipeline_subscriber_events",
                                     "Bounces, complaints and unsubscribes that came back, by kind",
                                     labels=["kind"])
        for kind in sorted({*(k.value for k in EventKind), *snap.events}):
            events.add_metric([kind], snap.events.get(kind, 0))
        yield events

    def _timetable(self, snap: StateSnapshot, now: datetime) -> Iterator[Metric]:
        fired = GaugeMetricFamily(
            "pipeline_timetable_last_fire_timestamp_seconds",
            "When the latest run of each timetable entry was due (Unix time); absent before its first run",
            labels=["entry"])
        due = GaugeMetricFamily("pipeline_timetable_last_due_timestamp_seconds",
                                "When each timetable entry last fell due (Unix time)", labels=["entry"])
        late = GaugeMetricFamily("pipeline_timetable_max_lateness_seconds",
                                 "How late each timetable entry may still fire (its max_lateness)",
                                 labels=["entry"])
        for entry in self.config.schedule:
            if entry.name in snap.last_fire:
                fired.add_metric([entry.name], snap.last_fire[entry.name].timestamp())
            when = self._due.last_due(entry, now)
            if when is not None:
                due.add_metric([entry.name], when.timestamp())
            late.add_metric([entry.name], entry.lateness.total_seconds())
        yield from (fired, due, late)

    def _scheduler(self, snap: StateSnapshot, now: datetime) -> Iterator[Metric]:
        holder = snap.lock if snap.lock is not None and now - snap.lock.heartbeat_at <= STALE_AFTER else None
        mine = holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname()
        leader = GaugeMetricFamily("pipeline_scheduler_leader",
                                   "1 on the process holding the scheduler lock (the active `pipeline run`)")
        leader.add_metric([], 1 if mine else 0)
        info = GaugeMetricFamily("pipeline_scheduler_leader_info",
                                 "1 for the host and pid of the active scheduler; absent when none is",
                                 labels=["host", "pid"])
        heartbeat = GaugeMetricFamily("pipeline_scheduler_heartbeat_timestamp_seconds",
                                      "When the active scheduler last renewed its lock (Unix time)")
        if holder is not None:
            info.add_metric([holder.host, str(holder.pid)], 1)
            heartbeat.add_metric([], holder.heartbeat_at.timestamp())
        yield from (leader, info, heartbeat)


def _le(bound: float) -> str:
    return str(float(bound))


def registry_for(config: Config, engine: Engine) -> CollectorRegistry:
    """A registry of its own (so several apps in one process never clash) with the process and
    Python metrics prometheus-client gives by default, and the `pipeline_*` metrics."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(StateCollector(config, engine))
    return registry
