"""What the queries take and give back: jobs, owners, attempts, errors."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func

from ..models import notify_jobs
from ..status import JobStatus

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

    @classmethod
    def unanswered(
        cls, job_id: uuid.UUID, number: int, started_at: datetime, error: str
    ) -> Attempt:
        """An attempt cut short before any answer (a cancel, a lost worker)."""
        finished_at = datetime.now(UTC)
        elapsed = (finished_at - started_at).total_seconds()
        return cls(
            job_id=job_id,
            number=number,
            started_at=started_at,
            finished_at=finished_at,
            duration_ms=max(0, int(elapsed * 1000)),
            response_status=None,
            error=error,
            response_excerpt=None,
        )

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


def job_columns() -> list[Any]:
    return [column for column in notify_jobs.c if column.name in Job.__slots__]


def changed(**values: Any) -> dict[str, Any]:
    """The SET clause every transition shares: bump the version, stamp the time."""
    return {
        "version": notify_jobs.c.version + 1,
        "updated_at": func.now(),
        **values,
    }
