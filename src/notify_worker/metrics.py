"""Prometheus metrics: what this process did, and what the table holds now.

Counters and the attempt histogram count this process's own work, so their
sum over processes is the whole service's. Counts by status, the pending
depth and the wait of the oldest due job are read from the jobs table at
scrape time: several processes may share one database, and the table is
the truth none of them holds in memory.

Each Runtime has its own registry, so two services in one process (a host
application, a test) never mix their figures.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import service
from .status import JobStatus

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from .events import EventHub
    from .worker import Worker

logger = logging.getLogger(__name__)

# A scrape never waits long for a busy database: it reports it as down.
TABLE_TIMEOUT_SECS = 5.0
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs_created = Counter(
            "notify_jobs_created",
            "Jobs this process created (API, batch and manual retries).",
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "notify_jobs_finished",
            "Jobs this process brought to a terminal status.",
            ["status"],
            registry=self.registry,
        )
        self.attempt_duration = Histogram(
            "notify_attempt_duration_seconds",
            "Duration of delivery attempts made by this process.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._live = _LiveCollector()
        self.registry.register(self._live)
        for status in JobStatus:
            if status.is_terminal:
                self.jobs_finished.labels(status.value)

    def bind(
        self,
        engine: AsyncEngine,
        hub: EventHub | None = None,
        worker: Worker | None = None,
    ) -> None:
        """Say where the live figures come from, once the runtime has started."""
        self._live.engine = engine
        self._live.hub = hub
        self._live.worker = worker

    def job_created(self, count: int = 1) -> None:
        self.jobs_created.inc(count)

    def job_finished(self, status: JobStatus) -> None:
        self.jobs_finished.labels(status.value).inc()

    def attempt_done(self, duration_ms: int, ok: bool) -> None:
        outcome = "success" if ok else "error"
        self.attempt_duration.labels(outcome).observe(duration_ms / 1000)

    async def scrape(self) -> bytes:
        """The exposition text, with the table read now."""
        self._live.table = await self._read_table()
        return generate_latest(self.registry)

    async def _read_table(self) -> service.TableFigures | None:
        engine = self._live.engine
        if engine is None:
            return None
        try:
            async with asyncio.timeout(TABLE_TIMEOUT_SECS):
                async with engine.connect() as conn:
                    return await service.table_figures(conn)
        except Exception as exc:  # the scrape still reports the process
            logger.warning(
                "metrics: cannot read the jobs table",
                extra={"action": "metrics_table_failed", "error": repr(exc)},
            )
            return None


class _LiveCollector(Collector):
    """Gauges read at scrape time from the runtime's parts and the table."""

    def __init__(self) -> None:
        self.engine: AsyncEngine | None = None
        self.hub: EventHub | None = None
        self.worker: Worker | None = None
        self.table: service.TableFigures | None = None

    def collect(self) -> Iterator[Metric]:
        yield from self._process()
        yield from self._pool()
        yield from self._table()

    def _process(self) -> Iterator[Metric]:
        in_flight = self.worker.in_flight if self.worker is not None else 0
        yield _gauge(
            "notify_attempts_in_flight",
            "Attempts this process is running now.",
            in_flight,
        )
        streams = self.hub.subscription_count if self.hub is not None else 0
        yield _gauge(
            "notify_open_streams", "SSE streams open on this process.", streams
        )
        listening = self.hub is not None and self.hub.connected
        yield _gauge(
            "notify_event_listener_up",
            "1 when this process's LISTEN connection is up.",
            int(listening),
        )

    def _pool(self) -> Iterator[Metric]:
        if self.engine is None:
            return
        pool: Any = self.engine.pool
        yield _gauge(
            "notify_db_pool_size", "Connections the pool keeps open.", pool.size()
        )
        family = GaugeMetricFamily(
            "notify_db_pool_connections",
            "Pooled database connections by state.",
            labels=["state"],
        )
        family.add_metric(["in_use"], pool.checkedout())
        family.add_metric(["idle"], pool.checkedin())
        family.add_metric(["overflow"], max(pool.overflow(), 0))
        yield family

    def _table(self) -> Iterator[Metric]:
        figures = self.table
        yield _gauge(
            "notify_table_up",
            "1 when this scrape could read the jobs table.",
            int(figures is not None),
        )
        if figures is None:
            return
        family = GaugeMetricFamily(
            "notify_jobs", "Jobs in the table by status.", labels=["status"]
        )
        for status, count in figures.counts.items():
            family.add_metric([status], count)
        yield family
        yield _gauge(
            "notify_pending_jobs",
            "Pending jobs in the table, due or scheduled for a retry.",
            figures.counts[JobStatus.PENDING.value],
        )
        yield _gauge(
            "notify_pending_due_jobs",
            "Pending jobs whose run time has come.",
            figures.pending_due,
        )
        yield _gauge(
            "notify_oldest_pending_age_seconds",
            "How long the oldest due pending job has waited past its run time.",
            figures.oldest_due_age_secs,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
