"""Jobs as their owners see them: create (once, in batches), read, cancel, retry."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from ..models import notify_attempts, notify_jobs
from ..status import JobStatus
from .records import (
    IDEMPOTENCY_WINDOW,
    RETRYABLE_BY_HAND,
    Attempt,
    IdempotencyConflict,
    InvalidTransition,
    Job,
    NewJob,
    NotFound,
    job_columns,
)
from .transitions import transition


async def create_job(
    conn: AsyncConnection,
    owner_id: int,
    target_url: str,
    payload: str,
    *,
    max_attempts: int = 1,
) -> Job:
    row = (
        await conn.execute(
            insert(notify_jobs)
            .values(
                owner_id=owner_id,
                target_url=target_url,
                payload=payload,
                max_attempts=max_attempts,
            )
            .returning(*job_columns())
        )
    ).one()
    return Job.from_row(row)


async def get_job(
    conn: AsyncConnection, job_id: uuid.UUID, owner_id: int | None = None
) -> Job | None:
    query = select(*job_columns()).where(notify_jobs.c.id == job_id)
    if owner_id is not None:
        query = query.where(notify_jobs.c.owner_id == owner_id)
    row = (await conn.execute(query)).first()
    return None if row is None else Job.from_row(row)


async def get_jobs(
    conn: AsyncConnection, job_ids: Iterable[uuid.UUID], owner_id: int
) -> list[Job]:
    """Those of these jobs that belong to the owner (in no particular order)."""
    ids = list(job_ids)
    if not ids:
        return []
    query = select(*job_columns()).where(
        notify_jobs.c.id.in_(ids), notify_jobs.c.owner_id == owner_id
    )
    return [Job.from_row(row) for row in await conn.execute(query)]


async def list_jobs(
    conn: AsyncConnection,
    owner_id: int,
    *,
    status: JobStatus | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Job]:
    query = (
        select(*job_columns())
        .where(notify_jobs.c.owner_id == owner_id)
        .order_by(notify_jobs.c.created_at.desc(), notify_jobs.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    if status is not None:
        query = query.where(notify_jobs.c.status == status.value)
    return [Job.from_row(row) for row in await conn.execute(query)]


async def list_attempts(conn: AsyncConnection, job_id: uuid.UUID) -> list[Attempt]:
    rows = await conn.execute(
        select(
            notify_attempts.c.job_id,
            notify_attempts.c.number,
            notify_attempts.c.started_at,
            notify_attempts.c.finished_at,
            notify_attempts.c.duration_ms,
            notify_attempts.c.response_status,
            notify_attempts.c.error,
            notify_attempts.c.response_excerpt,
        )
        .where(notify_attempts.c.job_id == job_id)
        .order_by(notify_attempts.c.number)
    )
    return [Attempt(**row._mapping) for row in rows]


async def is_cancelled(conn: AsyncConnection, job_id: uuid.UUID) -> bool:
    status = await conn.scalar(
        select(notify_jobs.c.status).where(notify_jobs.c.id == job_id)
    )
    return status == JobStatus.CANCELLED.value


async def cancel_job(conn: AsyncConnection, job_id: uuid.UUID, owner_id: int) -> Job:
    """Cancel a pending or running job of this owner.

    Raises NotFound for a job the owner cannot see and InvalidTransition for
    one that has already ended. The worker holding a running job learns of
    the cancel from the status event this UPDATE publishes.
    """
    job = await transition(
        conn,
        job_id,
        JobStatus.CANCELLED,
        owner_id=owner_id,
        values={"finished_at": func.now(), "error_message": "cancelled by owner"},
    )
    if job is not None:
        return job
    current = await get_job(conn, job_id, owner_id)
    if current is None:
        raise NotFound(job_id)
    raise InvalidTransition(current, JobStatus.CANCELLED)


# Creates with an Idempotency-Key, in batches, and by hand from an ended job.


def request_fingerprint(
    target_url: str, payload: str, max_attempts: int | None
) -> bytes:
    """A digest of what a create request asked for, to compare repeats with."""
    canonical = json.dumps([target_url, payload, max_attempts], ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).digest()


async def create_job_once(
    conn: AsyncConnection, owner_id: int, new: NewJob, key: str, fingerprint: bytes
) -> tuple[Job, bool]:
    """The job this owner's key names: created now (True) or the first time.

    A replay returns the job as its first create answered it. A key older
    than the window is released first, so its reuse creates a new job. Two
    requests racing with one key meet at the unique index: the second waits
    for the first to commit, inserts nothing and reads the first one's job.
    """
    owned_key = (notify_jobs.c.owner_id == owner_id) & (
        notify_jobs.c.idempotency_key == key
    )
    await conn.execute(
        update(notify_jobs)
        .where(owned_key, notify_jobs.c.created_at < func.now() - IDEMPOTENCY_WINDOW)
        .values(idempotency_key=None)
    )
    inserted = (
        await conn.execute(
            pg_insert(notify_jobs)
            .values(
                **new.values(owner_id),
                idempotency_key=key,
                request_fingerprint=fingerprint,
            )
            .on_conflict_do_nothing(
                index_elements=["owner_id", "idempotency_key"],
                index_where=notify_jobs.c.idempotency_key.is_not(None),
            )
            .returning(*job_columns())
        )
    ).first()
    if inserted is not None:
        return Job.from_row(inserted), True
    first = (
        await conn.execute(
            select(notify_jobs.c.request_fingerprint, *job_columns()).where(owned_key)
        )
    ).one()
    if first.request_fingerprint != fingerprint:
        raise IdempotencyConflict(key)
    return Job.from_row(first).as_created(), False


async def create_jobs(
    conn: AsyncConnection, owner_id: int, jobs: Sequence[NewJob]
) -> list[Job]:
    """Insert every job in one statement, returned in the order given."""
    rows = await conn.execute(
        insert(notify_jobs).returning(*job_columns(), sort_by_parameter_order=True),
        [job.values(owner_id) for job in jobs],
    )
    return [Job.from_row(row) for row in rows]


async def retry_job(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    owner_id: int | None = None,
    *,
    key: str | None = None,
) -> tuple[Job, bool]:
    """A new pending job with a failed or cancelled job's target and payload.

    The original stays as it ended; the new one points back at it. With an
    Idempotency-Key, a repeat (a double click, a client's retry) returns the
    job the key created, and False. Raises NotFound for a job the owner
    cannot see (owner None: an operator) and InvalidTransition for a job
    that is not failed or cancelled.
    """
    original = await get_job(conn, job_id, owner_id)
    if original is None:
        raise NotFound(job_id)
    if original.status not in RETRYABLE_BY_HAND:
        raise InvalidTransition(original, JobStatus.PENDING)
    new = NewJob(
        original.target_url, original.payload, original.max_attempts, original.id
    )
    if key is not None:
        fingerprint = request_fingerprint(f"retry:{original.id}", "", None)
        return await create_job_once(conn, original.owner_id, new, key, fingerprint)
    row = (
        await conn.execute(
            insert(notify_jobs)
            .values(**new.values(original.owner_id))
            .returning(*job_columns())
        )
    ).one()
    return Job.from_row(row), True
