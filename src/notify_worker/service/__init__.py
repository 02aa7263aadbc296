"""Every query the service makes, behind one package: nothing else holds SQL.

records      what the queries take and give back (Job, User, Attempt, errors)
owners       API tokens, browser sessions, signing secrets
jobs         jobs as their owners see them: create, read, cancel, retry
transitions  what workers change: claim, outcome, hand-back
workers      registration, heartbeats, rescue of jobs left running
operations   retention, listings across owners, the table's figures

Each transition is one conditional UPDATE whose WHERE clause names the
statuses it may leave (and, for a worker, that it still holds the job). No
row updated means the transition lost a race; the caller is told, and the
row is never forced. The trigger installed by the migrations publishes
every status change as a notification inside the same transaction.
"""

from .jobs import (
    cancel_job,
    create_job,
    create_job_once,
    create_jobs,
    get_job,
    get_jobs,
    is_cancelled,
    list_attempts,
    list_jobs,
    request_fingerprint,
    retry_job,
)
from .operations import (
    TableFigures,
    job_counts,
    jobs_for_operator,
    ping,
    prune_batch,
    table_figures,
)
from .owners import (
    SecretExists,
    active_signing_secrets,
    authenticate,
    create_signing_secret,
    create_token,
    create_user,
    end_sessions,
    find_user,
    hash_token,
    revoke_tokens,
    session_generation,
    user_for_session,
)
from .records import (
    IDEMPOTENCY_WINDOW,
    OWNER_CHANNEL,
    RETRYABLE_BY_HAND,
    SERVER_RESTARTED,
    TOKEN_BYTES,
    Attempt,
    IdempotencyConflict,
    InvalidTransition,
    Job,
    NewJob,
    NotFound,
    User,
    WorkerRecord,
    rfc3339,
)
from .transitions import (
    claim_jobs,
    jobs_held_by,
    mark_failed,
    mark_running,
    mark_success,
    record_attempt,
    release_job,
    statuses_of,
)
from .workers import (
    deregister_worker,
    heartbeat,
    holders_of_running_jobs,
    register_worker,
    rescue_jobs,
)

__all__ = [
    "Attempt",
    "IDEMPOTENCY_WINDOW",
    "IdempotencyConflict",
    "InvalidTransition",
    "Job",
    "NewJob",
    "NotFound",
    "OWNER_CHANNEL",
    "RETRYABLE_BY_HAND",
    "SERVER_RESTARTED",
    "SecretExists",
    "TOKEN_BYTES",
    "TableFigures",
    "User",
    "WorkerRecord",
    "active_signing_secrets",
    "authenticate",
    "cancel_job",
    "claim_jobs",
    "create_job",
    "create_job_once",
    "create_jobs",
    "create_signing_secret",
    "create_token",
    "create_user",
    "deregister_worker",
    "end_sessions",
    "find_user",
    "get_job",
    "get_jobs",
    "hash_token",
    "heartbeat",
    "holders_of_running_jobs",
    "is_cancelled",
    "job_counts",
    "jobs_for_operator",
    "jobs_held_by",
    "list_attempts",
    "list_jobs",
    "mark_failed",
    "mark_running",
    "mark_success",
    "ping",
    "prune_batch",
    "record_attempt",
    "register_worker",
    "release_job",
    "request_fingerprint",
    "rescue_jobs",
    "retry_job",
    "revoke_tokens",
    "rfc3339",
    "session_generation",
    "statuses_of",
    "table_figures",
    "user_for_session",
]
