"""Status events: one LISTEN connection per process, fanned out in memory.

The migrations' trigger publishes every status change on one channel. The
hub keeps a dedicated asyncpg connection (not a pooled one: LISTEN belongs
to a session) and hands each event to the streams watching that job and
to process-wide listeners such as the worker. Notifications sent while the
connection is down are lost, so after a reconnect every stream is told to
reload its state and every listener is told to sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from .service import OWNER_CHANNEL, Job, rfc3339
from .status import JobStatus

logger = logging.getLogger(__name__)

CHANNEL = "notify_job_events"


@dataclass(frozen=True, slots=True)
class StatusEvent:
    job_id: uuid.UUID
    owner_id: int
    status: JobStatus
    version: int
    error_message: str | None
    attempts: int
    max_attempts: int
    run_at: str | None
    worker_id: uuid.UUID | None

    @classmethod
    def from_notification(cls, payload: str) -> StatusEvent:
        data = json.loads(payload)
        worker = data.get("worker_id")
        return cls(
            job_id=uuid.UUID(data["id"]),
            owner_id=int(data["owner_id"]),
            status=JobStatus.parse(data["status"]),
            version=int(data["version"]),
            error_message=data.get("error_message"),
            attempts=int(data.get("attempts", 0)),
            max_attempts=int(data.get("max_attempts", 1)),
            run_at=data.get("run_at"),
            worker_id=uuid.UUID(worker) if worker else None,
        )

    @classmethod
    def from_job(cls, job: Job) -> StatusEvent:
        return cls(
            job_id=job.id,
            owner_id=job.owner_id,
            status=job.status,
            version=job.version,
            error_message=job.error_message,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            run_at=job.run_at.isoformat(),
            worker_id=job.worker_id,
        )

    def to_data(self) -> dict[str, Any]:
        """What a stream sends as the event's `data:` (serialised by json)."""
        return {
            "id": str(self.job_id),
            "status": self.status.value,
            "error_message": self.error_message,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "next_run_at": _same_as_job_json(self.run_at)
            if self.status is JobStatus.PENDING
            else None,
            "version": self.version,
        }


def _same_as_job_json(moment: str | None) -> str | None:
    """PostgreSQL's JSON spelling of a time, written as the job JSON writes it."""
    if moment is None:
        return None
    return rfc3339(datetime.fromisoformat(moment))


class Resync:
    """Queued instead of events a subscriber missed: reload from the table."""


RESYNC = Resync()


class Closed:
    """Queued last when the process shuts down: end the stream now."""


CLOSED = Closed()


class Subscription:
    """One stream's bounded view of the events of one job (or a few)."""

    def __init__(
        self,
        hub: EventHub,
        job_ids: frozenset[uuid.UUID],
        size: int,
        owner_id: int | None = None,
    ) -> None:
        self.job_ids = job_ids
        self.owner_id = owner_id
        self._hub = hub
        self._queue: asyncio.Queue[StatusEvent | Resync | Closed] = asyncio.Queue(
            size + 1
        )
        self._size = size
        self._closed = False

    def push(self, item: StatusEvent | Resync) -> None:
        if self._closed:
            return
        if self._queue.qsize() < self._size:
            self._queue.put_nowait(item)
            return
        # A slow reader does not make the hub buffer without bound: drop
        # what it has not read and tell it to reload the current state.
        self._drain()
        self._queue.put_nowait(RESYNC)

    def end(self) -> None:
        """Make the reader's next get() say CLOSED, whatever is queued."""
        self._closed = True
        self._drain()
        self._queue.put_nowait(CLOSED)

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    async def get(self) -> StatusEvent | Resync | Closed:
        return await self._queue.get()

    def close(self) -> None:
        self._hub.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


Listener = Callable[[StatusEvent], None]
ReconnectListener = Callable[[], None]


class EventHub:
    def __init__(
        self,
        dsn: str,
        *,
        queue_size: int = 16,
        health_check_secs: float = 10.0,
        max_backoff_secs: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._queue_size = queue_size
        self._health_check_secs = health_check_secs
        self._max_backoff_secs = max_backoff_secs
        self._subscriptions: dict[uuid.UUID, set[Subscription]] = {}
        self._listeners: list[Listener] = []
        self._reconnect_listeners: list[ReconnectListener] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._connected = asyncio.Event()
        self._connections = 0

    # What the rest of the process uses.

    def subscribe(
        self, *job_ids: uuid.UUID, owner_id: int | None = None
    ) -> Subscription:
        """One queue for the events of these jobs (a page watching a list).

        With `owner_id`, the subscription ends when that owner's
        credentials change (a revoke, a logout).
        """
        subscription = Subscription(
            self, frozenset(job_ids), self._queue_size, owner_id
        )
        for job_id in subscription.job_ids:
            self._subscriptions.setdefault(job_id, set()).add(subscription)
        if self._closing:
            subscription.end()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        for job_id in subscription.job_ids:
            watchers = self._subscriptions.get(job_id)
            if watchers is None:
                continue
            watchers.discard(subscription)
            if not watchers:
                del self._subscriptions[job_id]

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def add_reconnect_listener(self, listener: ReconnectListener) -> None:
        self._reconnect_listeners.append(listener)

    @property
    def subscription_count(self) -> int:
        """Open subscriptions, each counted once whatever it watches."""
        return len(self._everyone())

    def _everyone(self) -> set[Subscription]:
        return set().union(*self._subscriptions.values())

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # Lifecycle.

    async def start(self, *, wait_secs: float = 10.0) -> None:
        self._task = asyncio.create_task(self._run(), name="notify-event-listener")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_secs):
                await self._connected.wait()

    def end_streams(self) -> None:
        """Shutdown: end every open stream now, and any opened from here on.

        An open stream would otherwise hold the web server's graceful
        shutdown until its timeout; the browser reconnects elsewhere.
        """
        self._closing = True
        for watchers in tuple(self._subscriptions.values()):
            for subscription in tuple(watchers):
                subscription.end()

    async def close(self) -> None:
        self.end_streams()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # The listening connection.

    def _end_owner_streams(
        self, _conn: Any, _pid: int, _channel: str, payload: str
    ) -> None:
        try:
            owner_id = int(json.loads(payload)["owner_id"])
        except (ValueError, KeyError, TypeError):
            return
        for subscription in self._everyone():
            if subscription.owner_id == owner_id:
                subscription.end()

    def _dispatch(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            event = StatusEvent.from_notification(payload)
        except (ValueError, KeyError):
            logger.warning(
                "unreadable status event",
                extra={"action": "event_unreadable", "payload": payload[:200]},
            )
            return
        for subscription in tuple(self._subscriptions.get(event.job_id, ())):
            subscription.push(event)
        for listener in self._listeners:
            listener(event)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                connection = await asyncpg.connect(self._dsn, timeout=10)
            except Exception as exc:  # any failure to connect is retried
                logger.warning(
                    "event listener cannot connect, retrying in %.1fs",
                    backoff,
                    extra={
                        "action": "listener_connect_failed",
                        "error": f"{exc.__class__.__name__}: {exc}",
                    },
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_secs)
                continue
            try:
                await self._listen(connection)
            except Exception as exc:  # the listener must outlive any failure
                logger.warning(
                    "event listener lost its connection",
                    extra={
                        "action": "listener_disconnected",
                        "error": f"{exc.__class__.__name__}: {exc}",
                    },
                )
            finally:
                self._connected.clear()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), 2)
            backoff = 0.1

    async def _listen(self, connection: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _conn: lost.set())
        await connection.add_listener(CHANNEL, self._dispatch)
        await connection.add_listener(OWNER_CHANNEL, self._end_owner_streams)
        self._connections += 1
        self._connected.set()
        logger.info(
            "listening for status events",
            extra={"action": "listener_connected", "connections": self._connections},
        )
        if self._connections > 1:
            self._resync_everyone()
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self._health_check_secs)
                break
            # A half-open TCP connection raises nothing until it is used.
            await connection.fetchval("SELECT 1", timeout=5)
        raise OSError("listening connection closed")

    def _resync_everyone(self) -> None:
        for subscription in self._everyone():
            subscription.push(RESYNC)
        for listener in self._reconnect_listeners:
            listener()
