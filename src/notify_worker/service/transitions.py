"""The changes workers make: claim, outcome, hand-back, attempt records.

Each is one conditional UPDATE whose WHERE clause names the statuses it
may leave and that the worker still holds the job; no row updated means
the transition lost a race, and the row is left as it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from ..models import notify_attempts, notify_jobs, signing_secrets
from ..status import JobStatus, sources_of
from .records import Attempt, Job, changed, job_columns


async def transition(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    target: JobStatus,
    *,
    values: dict[str, Any],
    owner_id: int | None = None,
    worker_id: uuid.UUID | None = None,
    attempt: Attempt | None = None,
) -> Job | None:
    allowed = [status.value for status in sources_of(target)]
    query = (
        update(notify_jobs)
        .where(notify_jobs.c.id == job_id, notify_jobs.c.status.in_(allowed))
        .values(**changed(status=target.value, **values))
        .returning(*job_columns())
    )
    if attempt is not None:
        # The attempt's record rides in the same statement as the outcome
        # (a data-modifying CTE runs whether or not the UPDATE matches):
        # one round trip, and no transaction to open and commit.
        query = query.add_cte(attempt_insert(attempt, worker_id).cte("attempt"))
    if owner_id is not None:
        query = query.where(notify_jobs.c.owner_id == owner_id)
    if worker_id is not None:
        query = query.where(notify_jobs.c.worker_id == worker_id)
    row = (await conn.execute(query)).first()
    return None if row is None else Job.from_row(row)


async def mark_running(
    conn: AsyncConnection, job_id: uuid.UUID, worker_id: uuid.UUID
) -> Job | None:
    """Claim one pending job (the tutorial's step); None if it is not pending."""
    return await transition(
        conn,
        job_id,
        JobStatus.RUNNING,
        values={
            "worker_id": worker_id,
            "attempts": notify_jobs.c.attempts + 1,
            "started_at": func.coalesce(notify_jobs.c.started_at, func.now()),
        },
    )


async def claim_jobs(
    conn: AsyncConnection, worker_id: uuid.UUID, limit: int
) -> list[Job]:
    """Atomically switch up to `limit` due pending jobs to running, oldest first.

    SKIP LOCKED lets concurrent workers claim disjoint jobs without waiting
    on each other; the status test is repeated in the UPDATE because a row
    may have been cancelled between the scan and the lock.
    """
    due = (
        select(notify_jobs.c.id)
        .where(
            notify_jobs.c.status == JobStatus.PENDING.value,
            notify_jobs.c.run_at <= func.now(),
        )
        .order_by(notify_jobs.c.run_at, notify_jobs.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    query = (
        update(notify_jobs)
        .where(
            notify_jobs.c.id == due.c.id,
            notify_jobs.c.status == JobStatus.PENDING.value,
        )
        .values(
            **changed(
                status=JobStatus.RUNNING.value,
                worker_id=worker_id,
                attempts=notify_jobs.c.attempts + 1,
                started_at=func.coalesce(notify_jobs.c.started_at, func.now()),
            )
        )
        .returning(*job_columns(), _live_signing_keys().label("signing_keys"))
    )
    rows = await conn.execute(query)
    jobs = [Job.from_row(row) for row in rows]
    jobs.sort(key=lambda job: (job.run_at, job.created_at))
    return jobs


def _live_signing_keys() -> Any:
    """The job owner's signing secrets in use now, newest first, as an array.

    Read in the claim itself, so an attempt costs no query of its own, and a
    rotation applies from the next claim on.
    """
    return (
        select(
            func.array_agg(
                aggregate_order_by(
                    signing_secrets.c.secret,
                    signing_secrets.c.created_at.desc(),
                    signing_secrets.c.id.desc(),
                )
            )
        )
        .where(
            signing_secrets.c.user_id == notify_jobs.c.owner_id,
            or_(
                signing_secrets.c.expires_at.is_(None),
                signing_secrets.c.expires_at > func.now(),
            ),
        )
        .scalar_subquery()
    )


async def mark_success(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    worker_id: uuid.UUID,
    *,
    attempt: Attempt | None = None,
) -> Job | None:
    return await _finish(conn, job_id, worker_id, JobStatus.SUCCESS, None, attempt)


async def mark_failed(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    worker_id: uuid.UUID,
    message: str,
    *,
    attempt: Attempt | None = None,
) -> Job | None:
    return await _finish(conn, job_id, worker_id, JobStatus.FAILED, message, attempt)


async def _finish(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    worker_id: uuid.UUID,
    status: JobStatus,
    message: str | None,
    attempt: Attempt | None,
) -> Job | None:
    return await transition(
        conn,
        job_id,
        status,
        worker_id=worker_id,
        attempt=attempt,
        values={"finished_at": func.now(), "error_message": message, "worker_id": None},
    )


async def release_job(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    worker_id: uuid.UUID,
    *,
    run_at: datetime | None = None,
    message: str | None = None,
    refund_attempt: bool = False,
    attempt: Attempt | None = None,
) -> Job | None:
    """Hand a running job back to pending: a retry is due, or shutdown."""
    values: dict[str, Any] = {
        "worker_id": None,
        "error_message": message,
        "run_at": run_at if run_at is not None else func.now(),
    }
    if refund_attempt:
        values["attempts"] = func.greatest(notify_jobs.c.attempts - 1, 0)
    return await transition(
        conn,
        job_id,
        JobStatus.PENDING,
        worker_id=worker_id,
        values=values,
        attempt=attempt,
    )


async def record_attempt(
    conn: AsyncConnection, attempt: Attempt, worker_id: uuid.UUID
) -> None:
    await conn.execute(attempt_insert(attempt, worker_id))


def attempt_insert(attempt: Attempt, worker_id: uuid.UUID | None) -> Any:
    # A retried write whose first commit went through but whose answer was
    # lost must not fail forever on the unique (job, number) index.
    return (
        pg_insert(notify_attempts)
        .values(
            job_id=attempt.job_id,
            number=attempt.number,
            worker_id=worker_id,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            duration_ms=attempt.duration_ms,
            response_status=attempt.response_status,
            error=attempt.error,
            response_excerpt=attempt.response_excerpt,
        )
        .on_conflict_do_nothing(index_elements=["job_id", "number"])
    )


async def statuses_of(
    conn: AsyncConnection, job_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, JobStatus]:
    """The current status of each of these jobs that still exists."""
    rows = await conn.execute(
        select(notify_jobs.c.id, notify_jobs.c.status).where(
            notify_jobs.c.id.in_(list(job_ids))
        )
    )
    return {row.id: JobStatus.parse(row.status) for row in rows}


async def jobs_held_by(conn: AsyncConnection, worker_id: uuid.UUID) -> set[uuid.UUID]:
    """The jobs this worker holds as running, by the table."""
    held = await conn.scalars(
        select(notify_jobs.c.id).where(
            notify_jobs.c.status == JobStatus.RUNNING.value,
            notify_jobs.c.worker_id == worker_id,
        )
    )
    return set(held)
