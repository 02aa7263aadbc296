"""For operators: retention, listings across owners, the table's figures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from ..models import notify_attempts, notify_jobs, users
from ..status import JobStatus
from .records import Job, job_columns


async def prune_batch(
    conn: AsyncConnection, older_than: timedelta, limit: int
) -> tuple[int, int]:
    """Delete up to `limit` jobs finished before the cutoff, and their attempts.

    Only terminal jobs qualify, oldest first; the caller commits after each
    batch so no transaction holds many row locks for long. Returns the
    numbers of jobs and attempts deleted.
    """
    terminal = [status.value for status in JobStatus if status.is_terminal]
    ids = list(
        await conn.scalars(
            select(notify_jobs.c.id)
            .where(
                notify_jobs.c.status.in_(terminal),
                notify_jobs.c.finished_at < func.now() - older_than,
            )
            .order_by(notify_jobs.c.finished_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        return 0, 0
    attempts = await conn.execute(
        delete(notify_attempts).where(notify_attempts.c.job_id.in_(ids))
    )
    jobs = await conn.execute(
        delete(notify_jobs).where(
            notify_jobs.c.id.in_(ids), notify_jobs.c.status.in_(terminal)
        )
    )
    return jobs.rowcount, attempts.rowcount


async def jobs_for_operator(
    conn: AsyncConnection,
    *,
    owner_name: str | None = None,
    status: JobStatus | None = None,
    limit: int = 50,
) -> list[tuple[Job, str]]:
    """The newest jobs of every owner (or one), with each owner's name."""
    query = (
        select(*job_columns(), users.c.name.label("owner_name"))
        .join(users, users.c.id == notify_jobs.c.owner_id)
        .order_by(notify_jobs.c.created_at.desc(), notify_jobs.c.id.desc())
        .limit(limit)
    )
    if owner_name is not None:
        query = query.where(users.c.name == owner_name)
    if status is not None:
        query = query.where(notify_jobs.c.status == status.value)
    rows = await conn.execute(query)
    return [(Job.from_row(row), row.owner_name) for row in rows]


@dataclass(frozen=True, slots=True)
class TableFigures:
    """What the jobs table holds now, for /metrics."""

    counts: dict[str, int]
    pending_due: int
    oldest_due_age_secs: float


async def table_figures(conn: AsyncConnection) -> TableFigures:
    counts = await job_counts(conn)
    due = (
        await conn.execute(
            select(
                func.count(),
                func.extract("epoch", func.now() - func.min(notify_jobs.c.run_at)),
            ).where(
                notify_jobs.c.status == JobStatus.PENDING.value,
                notify_jobs.c.run_at <= func.now(),
            )
        )
    ).one()
    return TableFigures(
        counts={status.value: counts.get(status.value, 0) for status in JobStatus},
        pending_due=due[0],
        oldest_due_age_secs=float(due[1] or 0.0),
    )


async def ping(conn: AsyncConnection) -> None:
    """A round trip to the database, for readiness checks."""
    await conn.execute(text("SELECT 1"))


async def job_counts(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(
        select(notify_jobs.c.status, func.count()).group_by(notify_jobs.c.status)
    )
    return {row[0]: row[1] for row in rows}
