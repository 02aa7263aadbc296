"""Workers: registration, heartbeats, and the rescue of jobs left running."""

from __future__ import annotations

import uuid

from sqlalchemy import (
    ColumnElement,
    case,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from ..models import notify_jobs, notify_workers
from ..status import JobStatus
from .records import SERVER_RESTARTED, Attempt, Job, WorkerRecord, changed, job_columns
from .transitions import attempt_insert


async def register_worker(
    conn: AsyncConnection,
    worker_id: uuid.UUID,
    hostname: str,
    pid: int,
    process_started: int | None,
) -> None:
    await conn.execute(
        insert(notify_workers).values(
            id=worker_id, hostname=hostname, pid=pid, process_started=process_started
        )
    )


async def heartbeat(conn: AsyncConnection, worker_id: uuid.UUID) -> bool:
    """Stamp the worker alive; False if its row is gone (it was declared dead)."""
    result = await conn.execute(
        update(notify_workers)
        .where(notify_workers.c.id == worker_id)
        .values(heartbeat_at=func.now())
    )
    return result.rowcount == 1


async def deregister_worker(conn: AsyncConnection, worker_id: uuid.UUID) -> None:
    await conn.execute(delete(notify_workers).where(notify_workers.c.id == worker_id))


async def holders_of_running_jobs(
    conn: AsyncConnection, exclude: uuid.UUID
) -> tuple[list[WorkerRecord], bool]:
    """Workers other than `exclude` that hold running jobs.

    The second value says whether some running job has no registered worker
    at all (its worker row was removed), which makes it an orphan too.
    """
    age = func.extract("epoch", func.now() - notify_workers.c.heartbeat_at)
    rows = await conn.execute(
        select(
            notify_jobs.c.worker_id,
            notify_workers.c.id,
            notify_workers.c.hostname,
            notify_workers.c.pid,
            notify_workers.c.process_started,
            age.label("age"),
        )
        .select_from(
            notify_jobs.outerjoin(
                notify_workers, notify_workers.c.id == notify_jobs.c.worker_id
            )
        )
        .where(
            notify_jobs.c.status == JobStatus.RUNNING.value,
            or_(notify_jobs.c.worker_id.is_(None), notify_jobs.c.worker_id != exclude),
        )
        .distinct()
    )
    workers: list[WorkerRecord] = []
    unregistered = False
    for row in rows:
        if row.id is None:
            unregistered = True
            continue
        workers.append(
            WorkerRecord(
                id=row.id,
                hostname=row.hostname,
                pid=row.pid,
                process_started=row.process_started,
                heartbeat_age_secs=float(row.age),
            )
        )
    return workers, unregistered


async def rescue_jobs(
    conn: AsyncConnection, gone: list[uuid.UUID], *, include_unregistered: bool
) -> list[Job]:
    """End the running jobs of workers that are gone.

    A job with attempts left goes back to pending; the others end failed
    with `server restarted`. The holder is part of the WHERE clause, so a
    job that its worker finished meanwhile is left alone.
    """
    holder: ColumnElement[bool] = notify_jobs.c.worker_id.in_(gone) if gone else false()
    if include_unregistered:
        registered = select(notify_workers.c.id)
        holder = or_(
            holder,
            notify_jobs.c.worker_id.is_(None),
            notify_jobs.c.worker_id.not_in(registered),
        )
    running = notify_jobs.c.status == JobStatus.RUNNING.value
    # Lock them first: the claim time (the row's last change) dates the
    # attempt that the lost worker never recorded.
    lost = (
        await conn.execute(
            select(
                notify_jobs.c.id,
                notify_jobs.c.attempts,
                notify_jobs.c.updated_at,
                notify_jobs.c.worker_id,
            )
            .where(running, holder)
            .with_for_update()
        )
    ).all()
    if gone:
        await conn.execute(delete(notify_workers).where(notify_workers.c.id.in_(gone)))
    if not lost:
        return []
    retry = notify_jobs.c.attempts < notify_jobs.c.max_attempts
    query = (
        update(notify_jobs)
        .where(running, notify_jobs.c.id.in_([row.id for row in lost]))
        .values(
            **changed(
                status=case(
                    (retry, JobStatus.PENDING.value), else_=JobStatus.FAILED.value
                ),
                error_message=SERVER_RESTARTED,
                worker_id=None,
                run_at=func.now(),
                finished_at=case((retry, None), else_=func.now()),
            )
        )
        .returning(*job_columns())
    )
    jobs = [Job.from_row(row) for row in await conn.execute(query)]
    for row in lost:
        attempt = Attempt.unanswered(
            row.id, row.attempts, row.updated_at, SERVER_RESTARTED
        )
        await conn.execute(attempt_insert(attempt, row.worker_id))
    return jobs
