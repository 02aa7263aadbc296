"""Operator commands on the database: jobs list|show|cancel|retry, prune.

They work on every owner's jobs, straight on the database, as the person
who runs the service. Changes still go through the service layer's guarded
transitions, and the trigger tells running workers and streams about them.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import service
from .delivery import redact_url
from .status import JobStatus

logger = logging.getLogger(__name__)

TARGET_WIDTH = 60


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; the last one is left ragged."""
    widths = [
        max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)
    ]
    for cells in [headers, *rows]:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
        print("  ".join(padded).rstrip())


def moment(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def shorten(text: str | None, width: int) -> str:
    if not text:
        return "-"
    return text if len(text) <= width else text[: width - 1] + "…"


async def list_jobs(
    engine: AsyncEngine, status: JobStatus | None, owner: str | None, limit: int
) -> int:
    async with engine.connect() as conn:
        found = await service.jobs_for_operator(
            conn, owner_name=owner, status=status, limit=limit
        )
    if not found:
        print("no jobs")
        return 0
    print_table(
        ["ID", "STATUS", "ATTEMPTS", "OWNER", "CREATED", "TARGET"],
        [
            [
                str(job.id),
                job.status.value,
                f"{job.attempts}/{job.max_attempts}",
                name,
                moment(job.created_at),
                shorten(redact_url(job.target_url), TARGET_WIDTH),
            ]
            for job, name in found
        ],
    )
    return 0


async def show_job(engine: AsyncEngine, job_id: uuid.UUID) -> int:
    async with engine.connect() as conn:
        job = await service.get_job(conn, job_id)
        attempts = await service.list_attempts(conn, job_id) if job else []
    if job is None:
        return _no_such_job(job_id)
    next_run = moment(job.run_at) if job.status is JobStatus.PENDING else "-"
    print_table(
        ["FIELD", "VALUE"],
        [
            ["id", str(job.id)],
            ["owner", str(job.owner_id)],
            ["status", job.status.value],
            ["error", job.error_message or "-"],
            ["attempts", f"{job.attempts}/{job.max_attempts}"],
            ["next run", next_run],
            ["target", redact_url(job.target_url)],
            ["payload", shorten(job.payload, 200)],
            ["retry of", str(job.retry_of) if job.retry_of else "-"],
            ["created", moment(job.created_at)],
            ["started", moment(job.started_at)],
            ["finished", moment(job.finished_at)],
        ],
    )
    if attempts:
        print()
        print_table(
            ["#", "STARTED", "DURATION", "ANSWER", "ERROR"],
            [
                [
                    str(attempt.number),
                    moment(attempt.started_at),
                    f"{attempt.duration_ms} ms",
                    str(attempt.response_status or "-"),
                    attempt.error or "-",
                ]
                for attempt in attempts
            ],
        )
    return 0


async def cancel_job(engine: AsyncEngine, job_id: uuid.UUID) -> int:
    try:
        async with engine.begin() as conn:
            job = await _find(conn, job_id)
            cancelled = await service.cancel_job(conn, job_id, job.owner_id)
    except service.NotFound:
        return _no_such_job(job_id)
    except service.InvalidTransition as exc:
        fail(f"job {job_id} has already ended: {exc.job.status}")
        return 1
    print(f"job {cancelled.id} cancelled (it was {job.status})")
    return 0


async def retry_job(engine: AsyncEngine, job_id: uuid.UUID) -> int:
    try:
        async with engine.begin() as conn:
            job, _created = await service.retry_job(conn, job_id)
    except service.NotFound:
        return _no_such_job(job_id)
    except service.InvalidTransition as exc:
        fail(
            f"only a failed or cancelled job can be retried; {job_id} is {exc.job.status}"
        )
        return 1
    print(f"job {job.id} created as a retry of {job_id}")
    return 0


async def prune(engine: AsyncEngine, older_than: timedelta, batch_size: int) -> int:
    """Delete finished jobs in short transactions until none is left to delete."""
    jobs = attempts = 0
    while True:
        async with engine.begin() as conn:
            batch_jobs, batch_attempts = await service.prune_batch(
                conn, older_than, batch_size
            )
        jobs += batch_jobs
        attempts += batch_attempts
        if batch_jobs < batch_size:
            break
    logger.info(
        "finished jobs pruned",
        extra={
            "action": "jobs_pruned",
            "jobs": jobs,
            "attempts": attempts,
            "older_than_secs": older_than.total_seconds(),
        },
    )
    print(f"deleted {jobs} finished job(s) and {attempts} attempt(s)")
    return 0


async def _find(conn: AsyncConnection, job_id: uuid.UUID) -> service.Job:
    job = await service.get_job(conn, job_id)
    if job is None:
        raise service.NotFound(job_id)
    return job


def _no_such_job(job_id: uuid.UUID) -> int:
    fail(f"no job {job_id}")
    return 1


def fail(message: str) -> None:
    print(f"notify-worker: {message}", file=sys.stderr)
