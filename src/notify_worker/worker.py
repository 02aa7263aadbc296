"""The worker: wake-ups, permits, claims, attempts, heartbeats and rescue.

The table is the queue. The in-process queue only carries wake-ups: when
it is full the wake-up is dropped and the job waits in the table for the
next wake-up or poll. A worker first takes a permit, then claims as many
due jobs as it holds permits, in one statement, and runs each claimed job
as a named task that returns its permit whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from . import service, signing
from .config import Settings
from .database import UNAVAILABLE_ERRORS
from .delivery import AttemptResult, Deliverer
from .events import EventHub, StatusEvent
from .metrics import Metrics
from .processes import process_alive, process_start_ticks
from .retries import is_retryable, retry_delay
from .status import JobStatus

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Why an attempt task was cancelled from outside.
ABORT_SHUTDOWN = "shutdown"
ABORT_CANCELLED = "cancelled"
ABORT_LOST = "lost"

# A claim that failed (the database is away) is retried this soon, doubling
# up to the cap, without waiting for a wake-up that may never come.
CLAIM_RETRY_SECS = 0.5
CLAIM_RETRY_MAX_SECS = 5.0


class Worker:
    def __init__(
        self,
        engine: AsyncEngine,
        hub: EventHub,
        deliverer: Deliverer,
        settings: Settings,
        metrics: Metrics | None = None,
    ) -> None:
        self.id = uuid.uuid4()
        self.hostname = socket.gethostname()
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._hub = hub
        self._deliverer = deliverer
        self._settings = settings
        self._metrics = metrics if metrics is not None else Metrics()
        self._semaphore = asyncio.Semaphore(settings.max_concurrent)
        self._wakeups: asyncio.Queue[uuid.UUID | None] = asyncio.Queue(
            settings.queue_size
        )
        self._attempts: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._abort_reasons: dict[uuid.UUID, str] = {}
        self._recording: set[uuid.UUID] = set()
        self._background: list[asyncio.Task[None]] = []
        self._claim_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._claiming = False
        self._claims = 0
        self._stopping = asyncio.Event()
        self._grace_abandoned = asyncio.Event()
        self.dropped_wakeups = 0
        hub.add_listener(self._on_event)
        hub.add_reconnect_listener(self.wake)

    # What the web process and the event hub call.

    def wake(self, job_id: uuid.UUID | None = None) -> None:
        """Ask for a claim soon; never blocks, never fails."""
        try:
            self._wakeups.put_nowait(job_id)
        except asyncio.QueueFull:
            # Nothing is lost: the job is in the table for the next sweep.
            self.dropped_wakeups += 1

    @property
    def in_flight(self) -> int:
        return len(self._attempts)

    @property
    def running(self) -> bool:
        return self._claim_task is not None and not self._claim_task.done()

    def _on_event(self, event: StatusEvent) -> None:
        if event.status is JobStatus.PENDING:
            self.wake(event.job_id)
            return
        if event.job_id not in self._attempts:
            return
        if event.status is JobStatus.CANCELLED:
            self._abort(event.job_id, ABORT_CANCELLED)
        elif event.status is not JobStatus.RUNNING or event.worker_id != self.id:
            self._abort(event.job_id, ABORT_LOST)

    def _abort(self, job_id: uuid.UUID, reason: str) -> None:
        task = self._attempts.get(job_id)
        if task is None or job_id in self._abort_reasons:
            return
        if job_id in self._recording:
            # The target has answered: the outcome is being written, and
            # the guarded UPDATE settles any race with a cancel or rescue.
            return
        self._abort_reasons[job_id] = reason
        task.cancel()

    # Lifecycle.

    async def start(self) -> None:
        await self._retry_db(
            "worker_register",
            lambda conn: service.register_worker(
                conn,
                self.id,
                self.hostname,
                os.getpid(),
                process_start_ticks(os.getpid()),
            ),
        )
        logger.info(
            "worker started",
            extra={
                "action": "worker_started",
                "worker_id": str(self.id),
                "max_concurrent": self._settings.max_concurrent,
            },
        )
        # Jobs left running by a previous run of this host are rescued
        # before anything is claimed, and pending ones are swept at once.
        await self._rescue()
        self.wake()
        self._claim_task = asyncio.create_task(self._claim_loop(), name="notify-claims")
        self._background = [
            asyncio.create_task(self._heartbeat_loop(), name="notify-heartbeat"),
            asyncio.create_task(self._watch_loop(), name="notify-watch"),
        ]

    def begin_stop(self, grace_secs: float | None = None) -> asyncio.Task[None]:
        """Stop claiming now; the grace period runs from this call.

        Idempotent: a signal handler calls it at once, the runtime's stop
        awaits the same task later.
        """
        if self._stop_task is None:
            grace = (
                self._settings.shutdown_grace_secs if grace_secs is None else grace_secs
            )
            self._stopping.set()
            self.wake()
            self._stop_task = asyncio.create_task(
                self._stop(grace), name="notify-worker-stop"
            )
        return self._stop_task

    async def stop(self, grace_secs: float | None = None) -> None:
        """Stop claiming, let attempts finish within the grace, hand back the rest."""
        await self.begin_stop(grace_secs)

    async def _stop(self, grace: float) -> None:
        if self._claim_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._claim_task
        attempts = list(self._attempts.values())
        logger.info(
            "worker stopping",
            extra={
                "action": "worker_stopping",
                "worker_id": str(self.id),
                "in_flight": len(attempts),
                "grace_secs": grace,
            },
        )
        if attempts:
            await self._wait_for_grace(attempts, grace)
        for job_id in list(self._attempts):
            self._abort(job_id, ABORT_SHUTDOWN)
        remaining = list(self._attempts.values())
        if remaining:
            await asyncio.wait(remaining, timeout=10)
        # Heartbeats went on until now, so nobody rescued our jobs meanwhile.
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with self._engine.begin() as conn:
                await service.deregister_worker(conn, self.id)
        logger.info(
            "worker stopped",
            extra={"action": "worker_stopped", "worker_id": str(self.id)},
        )

    def abandon_grace(self) -> None:
        """Cut the shutdown grace short: abort what is still running now."""
        self._grace_abandoned.set()

    async def _wait_for_grace(
        self, attempts: list[asyncio.Task[None]], grace: float
    ) -> None:
        everything = asyncio.ensure_future(asyncio.wait(attempts))
        abandoned = asyncio.ensure_future(self._grace_abandoned.wait())
        await asyncio.wait(
            {everything, abandoned}, timeout=grace, return_when=asyncio.FIRST_COMPLETED
        )
        everything.cancel()
        abandoned.cancel()

    # The claim loop.

    async def _claim_loop(self) -> None:
        backoff = CLAIM_RETRY_SECS
        while not self._stopping.is_set():
            if not await self._acquire_permit():
                break
            permits = 1
            while not self._semaphore.locked():
                await self._semaphore.acquire()
                permits += 1
            jobs = await self._claim_with_permits(permits)
            if jobs is None:
                await self._sleep_unless_stopping(backoff)
                backoff = min(backoff * 2, CLAIM_RETRY_MAX_SECS)
                continue
            backoff = CLAIM_RETRY_SECS
            if len(jobs) < permits:
                await self._wait_for_wakeup()

    async def _claim_with_permits(self, permits: int) -> list[service.Job] | None:
        """Claim up to `permits` jobs and start them; None if the claim failed.

        The permits that found no job are given back. A claim that failed
        may still have committed (the answer was lost): the watch loop
        hands such jobs back.
        """
        jobs: list[service.Job] = []
        self._claiming = True
        self._claims += 1
        try:
            jobs = await self._claim(permits)
        except Exception as exc:
            self._log_failure("claim failed, retrying", "claim_failed", exc)
            return None
        finally:
            for job in jobs:
                self._start_attempt(job)
            self._claiming = False
            for _ in range(permits - len(jobs)):
                self._semaphore.release()
        return jobs

    async def _sleep_unless_stopping(self, secs: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), secs)

    async def _acquire_permit(self) -> bool:
        acquire = asyncio.ensure_future(self._semaphore.acquire())
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if acquire.done() and not acquire.cancelled():
            if self._stopping.is_set():
                self._semaphore.release()
                return False
            return True
        acquire.cancel()
        return False

    async def _claim(self, limit: int) -> list[service.Job]:
        # One statement, atomic by itself: no transaction to open and commit.
        async with self._autocommit.connect() as conn:
            jobs = await service.claim_jobs(conn, self.id, limit)
        for job in jobs:
            logger.debug(
                "job claimed",
                extra={
                    "action": "job_claimed",
                    "job_id": str(job.id),
                    "owner_id": job.owner_id,
                    "attempt": job.attempts,
                    "worker_id": str(self.id),
                },
            )
        return jobs

    async def _wait_for_wakeup(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._wakeups.get(), self._settings.poll_interval_secs
            )
        while not self._wakeups.empty():
            self._wakeups.get_nowait()

    # One attempt.

    def _start_attempt(self, job: service.Job) -> None:
        task = asyncio.create_task(self._attempt(job), name=f"notify-attempt-{job.id}")
        self._attempts[job.id] = task

    async def _attempt(self, job: service.Job) -> None:
        started_at = datetime.now(UTC)
        try:
            body = job.payload.encode()
            # The claim brought the owner's signing secrets along.
            headers = signing.headers(str(job.id), body, list(job.signing_keys))
            result = await self._deliverer.deliver(job.target_url, body, headers)
        except asyncio.CancelledError:
            reason = self._abort_reasons.pop(job.id, ABORT_SHUTDOWN)
            await asyncio.shield(self._aborted(job, reason, started_at))
            raise
        else:
            self._recording.add(job.id)
            await asyncio.shield(self._record(job, result))
        finally:
            self._attempts.pop(job.id, None)
            self._abort_reasons.pop(job.id, None)
            self._recording.discard(job.id)
            self._semaphore.release()

    async def _record(self, job: service.Job, result: AttemptResult) -> None:
        attempt = service.Attempt(
            job_id=job.id,
            number=job.attempts,
            started_at=result.started_at,
            finished_at=result.finished_at,
            duration_ms=result.duration_ms,
            response_status=result.status_code,
            error=result.error,
            response_excerpt=result.excerpt,
        )
        retry = (
            not result.ok and job.attempts < job.max_attempts and is_retryable(result)
        )
        run_at = None
        if retry:
            delay = retry_delay(
                job.attempts,
                result,
                self._settings.retry_schedule,
                self._settings.retry_after_cap_secs,
            )
            run_at = datetime.now(UTC) + delay

        async def write(conn: Any) -> service.Job | None:
            # The attempt's record and the outcome go in one statement.
            if result.ok:
                return await service.mark_success(
                    conn, job.id, self.id, attempt=attempt
                )
            if run_at is not None:
                return await service.release_job(
                    conn,
                    job.id,
                    self.id,
                    run_at=run_at,
                    message=result.error,
                    attempt=attempt,
                )
            assert result.error is not None
            return await service.mark_failed(
                conn, job.id, self.id, result.error, attempt=attempt
            )

        updated = await self._retry_db("attempt_record", write, autocommit=True)
        self._metrics.attempt_done(result.duration_ms, result.ok)
        if updated is not None and updated.status.is_terminal:
            self._metrics.job_finished(updated.status)
        self._log_outcome(job, result, updated)

    def _log_outcome(
        self, job: service.Job, result: AttemptResult, updated: service.Job | None
    ) -> None:
        """The one canonical line per attempt, at the level its outcome deserves."""
        fields = {
            "job_id": str(job.id),
            "owner_id": job.owner_id,
            "attempt": job.attempts,
            "status_code": result.status_code,
            "duration_ms": result.duration_ms,
            "worker_id": str(self.id),
        }
        if updated is None:
            # The job was cancelled or rescued while the request ran; the
            # guarded UPDATE left it as it is.
            logger.warning(
                "attempt outcome discarded: the job is no longer ours",
                extra={"action": "attempt_outcome_discarded", **fields},
            )
        elif result.ok:
            logger.info(
                "attempt succeeded", extra={"action": "attempt_succeeded", **fields}
            )
        elif updated.status is JobStatus.PENDING:
            logger.warning(
                "attempt failed, will retry: %s",
                result.error,
                extra={
                    "action": "attempt_retry_scheduled",
                    "error": result.error,
                    "next_run_at": updated.run_at.isoformat(),
                    **fields,
                },
            )
        else:
            logger.error(
                "attempt failed: %s",
                result.error,
                extra={"action": "attempt_failed", "error": result.error, **fields},
            )

    async def _aborted(
        self, job: service.Job, reason: str, started_at: datetime
    ) -> None:
        fields = {"job_id": str(job.id), "owner_id": job.owner_id, "reason": reason}
        if reason == ABORT_CANCELLED:
            # The cancelled job's history shows the request it cut short. An
            # attempt handed back at shutdown is refunded and not recorded:
            # the next worker's attempt takes its number.
            await self._retry_db(
                "attempt_record",
                lambda conn: service.record_attempt(
                    conn,
                    service.Attempt.unanswered(
                        job.id, job.attempts, started_at, "aborted: cancelled by owner"
                    ),
                    self.id,
                ),
                attempts=5,
            )
        if reason == ABORT_SHUTDOWN:
            await self._retry_db(
                "job_hand_back",
                lambda conn: service.release_job(
                    conn, job.id, self.id, refund_attempt=True
                ),
                attempts=5,
            )
        logger.info("attempt aborted", extra={"action": "attempt_aborted", **fields})

    # Heartbeats, cancels missed by the listener, rescue of other workers' jobs.

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_secs)
            try:
                async with self._engine.begin() as conn:
                    alive = await service.heartbeat(conn, self.id)
                    if not alive:
                        # Declared dead during an outage: our jobs were
                        # rescued, so register again and drop them.
                        await service.register_worker(
                            conn,
                            self.id,
                            self.hostname,
                            os.getpid(),
                            process_start_ticks(os.getpid()),
                        )
                if not alive:
                    for job_id in list(self._attempts):
                        self._abort(job_id, ABORT_LOST)
            except Exception as exc:
                self._log_failure("heartbeat failed", "heartbeat_failed", exc)

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self._settings.heartbeat_secs))
            try:
                await self._check_held()
                await self._rescue()
            except Exception as exc:
                self._log_failure("watch failed", "watch_failed", exc)

    async def _check_held(self) -> None:
        """Compare what this worker runs with what the table says it holds.

        An attempt whose job it no longer holds was cancelled (or rescued)
        without our hearing of it: abort it. A job it holds but never
        started comes from a claim whose commit succeeded but whose answer
        was lost: hand it back, or no rescue would ever touch it. One query
        serves both; the claim counter tells a claim that overlapped it,
        whose jobs may not be started yet.
        """
        # Snapshot first: every job in it was committed before the query.
        in_flight = set(self._attempts)
        claims = self._claims
        async with self._engine.connect() as conn:
            held = await service.jobs_held_by(conn, self.id)
            gone = in_flight - held
            statuses = await service.statuses_of(conn, gone) if gone else {}
        for job_id in gone:
            cancelled = statuses.get(job_id) is JobStatus.CANCELLED
            self._abort(job_id, ABORT_CANCELLED if cancelled else ABORT_LOST)
        if self._claiming or self._claims != claims:
            return
        for job_id in held - set(self._attempts):
            await self._hand_back_unstarted(job_id)

    async def _hand_back_unstarted(self, job_id: uuid.UUID) -> None:
        async with self._engine.begin() as conn:
            job = await service.release_job(conn, job_id, self.id, refund_attempt=True)
        if job is not None:
            logger.warning(
                "job handed back: claimed but never started",
                extra={
                    "action": "job_unstarted_released",
                    "job_id": str(job_id),
                    "owner_id": job.owner_id,
                    "worker_id": str(self.id),
                },
            )

    async def _rescue(self) -> None:
        async with self._engine.connect() as conn:
            holders, unregistered = await service.holders_of_running_jobs(conn, self.id)
        gone = [holder.id for holder in holders if self._is_gone(holder)]
        if not gone and not unregistered:
            return
        async with self._engine.begin() as conn:
            jobs = await service.rescue_jobs(
                conn, gone, include_unregistered=unregistered
            )
        for job in jobs:
            if job.status.is_terminal:
                self._metrics.job_finished(job.status)
            logger.warning(
                "job rescued from a lost worker",
                extra={
                    "action": "job_rescued",
                    "job_id": str(job.id),
                    "owner_id": job.owner_id,
                    "status": job.status.value,
                    "worker_id": str(self.id),
                },
            )

    def _is_gone(self, holder: service.WorkerRecord) -> bool:
        if holder.heartbeat_age_secs > self._settings.worker_stale_secs:
            return True
        if holder.hostname == self.hostname:
            return not process_alive(holder.pid, holder.process_started)
        return False

    async def _retry_db(
        self,
        action: str,
        work: Callable[[Any], Awaitable[T]],
        *,
        attempts: int | None = None,
        autocommit: bool = False,
    ) -> T:
        """Run `work` in a transaction until the database takes it.

        An outcome that was not written would leave its job running under a
        live worker forever, so the write is retried through an outage.
        `autocommit` is for work that is one statement: it then needs no
        BEGIN and COMMIT of its own.
        """
        delay = 0.2
        tries = 0
        while True:
            tries += 1
            try:
                if autocommit:
                    async with self._autocommit.connect() as conn:
                        return await work(conn)
                async with self._engine.begin() as conn:
                    return await work(conn)
            except Exception as exc:
                if attempts is not None and tries >= attempts:
                    raise
                self._log_failure(
                    "database write failed, retrying", f"{action}_retry", exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _log_failure(self, message: str, action: str, exc: Exception) -> None:
        """One line while the database is away; a traceback for anything else."""
        logger.warning(
            "%s: %s",
            message,
            exc.__class__.__name__,
            exc_info=not isinstance(exc, UNAVAILABLE_ERRORS),
            extra={"action": action, "worker_id": str(self.id)},
        )
