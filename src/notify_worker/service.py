"""Every query the service makes: owners, jobs, transitions, claims, rescue.

Each transition is one conditional UPDATE whose WHERE clause names the
statuses it may leave (and, for a worker, that it still holds the job). No
row updated means the transition lost a race; the caller is told, and the
row is never forced. The trigger installed by the migrations publishes
every status change as a notification inside the same transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Text,
    case,
    cast,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from . import signing
from .models import (
    api_tokens,
    notify_attempts,
    notify_jobs,
    notify_workers,
    signing_secrets,
    users,
)
from .status import JobStatus, sources_of

SERVER_RESTARTED = "server restarted"
# Where a revoke or a logout is announced (see events.EventHub).
OWNER_CHANNEL = "notify_owner_events"
TOKEN_BYTES = 32
IDEMPOTENCY_WINDOW = timedelta(hours=24)
RETRYABLE_BY_HAND = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


class NotFound(Exception):
    """No such job, or one that belongs to another owner."""


class IdempotencyConflict(Exception):
    """The Idempotency-Key was first used for a different request."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"the Idempotency-Key {key!r} was already used with a different request"
        )
        self.key = key


class InvalidTransition(Exception):
    """The job's current status does not allow the requested change."""

    def __init__(self, job: Job, target: JobStatus) -> None:
        super().__init__(f"a {job.status} job cannot become {target}")
        self.job = job
        self.target = target


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Job:
    id: uuid.UUID
    owner_id: int
    target_url: str
    payload: str
    status: JobStatus
    error_message: str | None
    attempts: int
    max_attempts: int
    run_at: datetime
    worker_id: uuid.UUID | None
    version: int
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime
    retry_of: uuid.UUID | None = None
    # Filled by a claim only: the owner's live signing secrets, newest first.
    signing_keys: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_row(cls, row: Any) -> Job:
        # A row may carry more than the job (an owner's name, a fingerprint).
        values = {
            key: row._mapping[key] for key in cls.__slots__ if key in row._mapping
        }
        values["status"] = JobStatus.parse(values["status"])
        if "signing_keys" in values:
            values["signing_keys"] = tuple(values["signing_keys"] or ())
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "owner_id": self.owner_id,
            "target_url": self.target_url,
            "payload": json.loads(self.payload),
            "status": self.status.value,
            "error_message": self.error_message,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "next_run_at": _rfc3339(self.run_at)
            if self.status is JobStatus.PENDING
            else None,
            "version": self.version,
            "started_at": _rfc3339(self.started_at),
            "finished_at": _rfc3339(self.finished_at),
            "created_at": _rfc3339(self.created_at),
            "updated_at": _rfc3339(self.updated_at),
            "retry_of": None if self.retry_of is None else str(self.retry_of),
        }

    def as_created(self) -> Job:
        """The job as its create request returned it, whatever happened since.

        A new row takes its run time, creation and update times from the
        same transaction clock and its counters from column defaults, so
        they can be set back exactly.
        """
        return replace(
            self,
            status=JobStatus.PENDING,
            error_message=None,
            attempts=0,
            run_at=self.created_at,
            worker_id=None,
            version=1,
            started_at=None,
            finished_at=None,
            updated_at=self.created_at,
        )


@dataclass(frozen=True, slots=True)
class NewJob:
    """What a create request asks for, once checked."""

    target_url: str
    payload: str
    max_attempts: int = 1
    retry_of: uuid.UUID | None = None

    def values(self, owner_id: int) -> dict[str, Any]:
        return {
            "owner_id": owner_id,
            "target_url": self.target_url,
            "payload": self.payload,
            "max_attempts": self.max_attempts,
            "retry_of": self.retry_of,
        }


@dataclass(frozen=True, slots=True)
class Attempt:
    job_id: uuid.UUID
    number: int
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    response_status: int | None
    error: str | None
    response_excerpt: bytes | None

    def to_json(self) -> dict[str, Any]:
        excerpt = self.response_excerpt
        return {
            "number": self.number,
            "started_at": _rfc3339(self.started_at),
            "finished_at": _rfc3339(self.finished_at),
            "duration_ms": self.duration_ms,
            "response_status": self.response_status,
            "error": self.error,
            "response_excerpt": None
            if excerpt is None
            else excerpt.decode("utf-8", errors="replace"),
        }


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    id: uuid.UUID
    hostname: str
    pid: int
    process_started: int | None
    heartbeat_age_secs: float


def _rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# How every JSON answer spells a time; the event stream uses it too.
rfc3339 = _rfc3339


def _job_columns() -> list[Any]:
    return [column for column in notify_jobs.c if column.name in Job.__slots__]


def _changed(**values: Any) -> dict[str, Any]:
    """The SET clause every transition shares: bump the version, stamp the time."""
    return {
        "version": notify_jobs.c.version + 1,
        "updated_at": func.now(),
        **values,
    }


# Owners and tokens.


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_user(conn: AsyncConnection, name: str) -> tuple[User, str]:
    """Create an owner and its first API token; the token is returned once."""
    user_id = await conn.scalar(insert(users).values(name=name).returning(users.c.id))
    assert user_id is not None
    token = await create_token(conn, user_id)
    return User(id=user_id, name=name), token


async def find_user(conn: AsyncConnection, name: str) -> User | None:
    row = (await conn.execute(select(users).where(users.c.name == name))).first()
    return None if row is None else User(id=row.id, name=row.name)


async def create_token(conn: AsyncConnection, user_id: int) -> str:
    token = "nw_" + secrets.token_urlsafe(TOKEN_BYTES)
    await conn.execute(
        insert(api_tokens).values(user_id=user_id, token_hash=hash_token(token))
    )
    return token


async def revoke_tokens(conn: AsyncConnection, user_id: int) -> int:
    result = await conn.execute(
        update(api_tokens)
        .where(api_tokens.c.user_id == user_id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    await _credentials_changed(conn, user_id)
    return result.rowcount


async def _credentials_changed(conn: AsyncConnection, user_id: int) -> None:
    """Tell every process to end this owner's open streams, at commit.

    A stream checks its credentials once, when it opens; a revoke or a
    logout must not leave one running for the hours a retrying job lasts.
    Clients whose credentials still hold reconnect at once.
    """
    await conn.execute(
        select(
            func.pg_notify(
                OWNER_CHANNEL,
                cast(func.json_build_object("owner_id", user_id), Text),
            )
        )
    )


async def authenticate(conn: AsyncConnection, token: str) -> tuple[User, int] | None:
    """The owner of a live token and the token's id, or None."""
    digest = hash_token(token)
    row = (
        await conn.execute(
            select(api_tokens.c.id, api_tokens.c.token_hash, users.c.id, users.c.name)
            .join(users, users.c.id == api_tokens.c.user_id)
            .where(api_tokens.c.token_hash == digest, api_tokens.c.revoked_at.is_(None))
        )
    ).first()
    # The lookup is by an index on the hash; compare again in constant time
    # so a match never depends on how far two byte strings agree.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return User(id=row[2], name=row.name), row[0]


async def user_for_session(
    conn: AsyncConnection, token_id: int, generation: int
) -> User | None:
    """The owner of a browser session, unless its token was revoked or the
    session was ended by a logout."""
    row = (
        await conn.execute(
            select(users.c.id, users.c.name)
            .join(api_tokens, api_tokens.c.user_id == users.c.id)
            .where(
                api_tokens.c.id == token_id,
                api_tokens.c.revoked_at.is_(None),
                api_tokens.c.session_generation == generation,
            )
        )
    ).first()
    return None if row is None else User(id=row.id, name=row.name)


async def session_generation(conn: AsyncConnection, token_id: int) -> int:
    value = await conn.scalar(
        select(api_tokens.c.session_generation).where(api_tokens.c.id == token_id)
    )
    return int(value or 0)


async def end_sessions(conn: AsyncConnection, token_id: int) -> None:
    """Log out every browser session made with this token."""
    user_id = await conn.scalar(
        update(api_tokens)
        .where(api_tokens.c.id == token_id)
        .values(session_generation=api_tokens.c.session_generation + 1)
        .returning(api_tokens.c.user_id)
    )
    if user_id is not None:
        await _credentials_changed(conn, user_id)


# Jobs as their owners see them.


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
            .returning(*_job_columns())
        )
    ).one()
    return Job.from_row(row)


async def get_job(
    conn: AsyncConnection, job_id: uuid.UUID, owner_id: int | None = None
) -> Job | None:
    query = select(*_job_columns()).where(notify_jobs.c.id == job_id)
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
    query = select(*_job_columns()).where(
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
        select(*_job_columns())
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
    job = await _transition(
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


# Transitions made by workers.


async def _transition(
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
        .values(**_changed(status=target.value, **values))
        .returning(*_job_columns())
    )
    if attempt is not None:
        # The attempt's record rides in the same statement as the outcome
        # (a data-modifying CTE runs whether or not the UPDATE matches):
        # one round trip, and no transaction to open and commit.
        query = query.add_cte(_attempt_insert(attempt, worker_id).cte("attempt"))
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
    return await _transition(
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
            **_changed(
                status=JobStatus.RUNNING.value,
                worker_id=worker_id,
                attempts=notify_jobs.c.attempts + 1,
                started_at=func.coalesce(notify_jobs.c.started_at, func.now()),
            )
        )
        .returning(*_job_columns(), _live_signing_keys().label("signing_keys"))
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
    return await _transition(
        conn,
        job_id,
        JobStatus.SUCCESS,
        worker_id=worker_id,
        attempt=attempt,
        values={"finished_at": func.now(), "error_message": None, "worker_id": None},
    )


async def mark_failed(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    worker_id: uuid.UUID,
    message: str,
    *,
    attempt: Attempt | None = None,
) -> Job | None:
    return await _transition(
        conn,
        job_id,
        JobStatus.FAILED,
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
    return await _transition(
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
    await conn.execute(_attempt_insert(attempt, worker_id))


def _attempt_insert(attempt: Attempt, worker_id: uuid.UUID | None) -> Any:
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
    conn: AsyncConnection, job_ids: Iterable[uuid.UUID], worker_id: uuid.UUID
) -> set[uuid.UUID]:
    """Of these jobs, the ones this worker no longer holds as running."""
    ids = list(job_ids)
    if not ids:
        return set()
    held = await conn.scalars(
        select(notify_jobs.c.id).where(
            notify_jobs.c.id.in_(ids),
            notify_jobs.c.status == JobStatus.RUNNING.value,
            notify_jobs.c.worker_id == worker_id,
        )
    )
    return set(ids) - set(held)


async def jobs_held_by(conn: AsyncConnection, worker_id: uuid.UUID) -> set[uuid.UUID]:
    """The jobs this worker holds as running, by the table."""
    held = await conn.scalars(
        select(notify_jobs.c.id).where(
            notify_jobs.c.status == JobStatus.RUNNING.value,
            notify_jobs.c.worker_id == worker_id,
        )
    )
    return set(held)


async def pending_ids(conn: AsyncConnection, limit: int) -> list[uuid.UUID]:
    rows = await conn.scalars(
        select(notify_jobs.c.id)
        .where(notify_jobs.c.status == JobStatus.PENDING.value)
        .order_by(notify_jobs.c.run_at)
        .limit(limit)
    )
    return list(rows)


# Workers: registration, heartbeats and the rescue of jobs left running.


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
            **_changed(
                status=case(
                    (retry, JobStatus.PENDING.value), else_=JobStatus.FAILED.value
                ),
                error_message=SERVER_RESTARTED,
                worker_id=None,
                run_at=func.now(),
                finished_at=case((retry, None), else_=func.now()),
            )
        )
        .returning(*_job_columns())
    )
    jobs = [Job.from_row(row) for row in await conn.execute(query)]
    now = datetime.now(UTC)
    for row in lost:
        attempt = Attempt(
            job_id=row.id,
            number=row.attempts,
            started_at=row.updated_at,
            finished_at=now,
            duration_ms=max(0, int((now - row.updated_at).total_seconds() * 1000)),
            response_status=None,
            error=SERVER_RESTARTED,
            response_excerpt=None,
        )
        await conn.execute(_attempt_insert(attempt, row.worker_id))
    return jobs


async def job_counts(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(
        select(notify_jobs.c.status, func.count()).group_by(notify_jobs.c.status)
    )
    return {row[0]: row[1] for row in rows}


# Signing secrets: each owner's current secret, and the one it replaced
# while that one is within its grace period.


class SecretExists(Exception):
    """The owner already has a signing secret; rotate it instead."""


async def create_signing_secret(
    conn: AsyncConnection, user_id: int, *, rotate: bool, grace_secs: int
) -> str:
    """A new signing secret for the owner, returned once.

    Rotating gives every secret still in use `grace_secs` more to live, so
    the old and the new secret sign side by side until it runs out.
    """
    current = signing_secrets.c.expires_at.is_(None)
    # Lock the owner so two rotations at once cannot leave two current secrets.
    await conn.execute(
        select(users.c.id).where(users.c.id == user_id).with_for_update()
    )
    live = await active_signing_secrets(conn, user_id)
    if live and not rotate:
        raise SecretExists(user_id)
    if rotate:
        await conn.execute(
            update(signing_secrets)
            .where(signing_secrets.c.user_id == user_id, current)
            .values(expires_at=func.now() + timedelta(seconds=grace_secs))
        )
    secret = signing.new_secret()
    await conn.execute(insert(signing_secrets).values(user_id=user_id, secret=secret))
    return secret


async def active_signing_secrets(conn: AsyncConnection, user_id: int) -> list[str]:
    """The secrets that sign this owner's deliveries now, newest first."""
    rows = await conn.scalars(
        select(signing_secrets.c.secret)
        .where(
            signing_secrets.c.user_id == user_id,
            or_(
                signing_secrets.c.expires_at.is_(None),
                signing_secrets.c.expires_at > func.now(),
            ),
        )
        .order_by(signing_secrets.c.created_at.desc(), signing_secrets.c.id.desc())
    )
    return list(rows)


# Operations: idempotent and batch creates, manual retries, retention, figures.


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
            .returning(*_job_columns())
        )
    ).first()
    if inserted is not None:
        return Job.from_row(inserted), True
    first = (
        await conn.execute(
            select(notify_jobs.c.request_fingerprint, *_job_columns()).where(owned_key)
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
        insert(notify_jobs).returning(*_job_columns(), sort_by_parameter_order=True),
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
            .returning(*_job_columns())
        )
    ).one()
    return Job.from_row(row), True


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
        select(*_job_columns(), users.c.name.label("owner_name"))
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
