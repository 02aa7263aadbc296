"""Tables, as SQLAlchemy Core metadata; the migrations build the same schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)

from .status import JobStatus

metadata = MetaData(
    naming_convention={
        "pk": "%(table_name)s_pkey",
        "fk": "%(table_name)s_%(column_0_name)s_fkey",
        "uq": "%(table_name)s_%(column_0_name)s_key",
        "ck": "%(table_name)s_%(constraint_name)s_check",
        "ix": "%(table_name)s_%(column_0_name)s_idx",
    }
)

STATUS_WORDS = ", ".join(f"'{status.value}'" for status in JobStatus)


users = Table(
    "users",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column(
        "created_at", DateTime(timezone=True), nullable=False, server_default=func.now()
    ),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column(
        "user_id",
        BigInteger,
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # SHA-256 of the token; the token itself is shown once and never stored.
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column(
        "created_at", DateTime(timezone=True), nullable=False, server_default=func.now()
    ),
    Column("revoked_at", DateTime(timezone=True)),
    # Bumped by a logout: every session cookie made with the token before
    # carries the old number and stops working.
    Column("session_generation", Integer, nullable=False, server_default="0"),
    Index("api_tokens_user_id_idx", "user_id"),
)

notify_workers = Table(
    "notify_workers",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("hostname", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    # The process start time as the kernel counts it, so a reused pid is
    # not mistaken for the worker that used to hold it.
    Column("process_started", BigInteger),
    Column(
        "started_at", DateTime(timezone=True), nullable=False, server_default=func.now()
    ),
    Column(
        "heartbeat_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
    ),
)

notify_jobs = Table(
    "notify_jobs",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column(
        "owner_id",
        BigInteger,
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("target_url", Text, nullable=False),
    # The payload text exactly as the owner sent it: these bytes are POSTed.
    Column("payload", Text, nullable=False),
    Column(
        "status", String(16), nullable=False, server_default=JobStatus.PENDING.value
    ),
    Column("error_message", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False, server_default="1"),
    Column(
        "run_at", DateTime(timezone=True), nullable=False, server_default=func.now()
    ),
    Column("worker_id", Uuid),
    # Bumped by every status change; the SSE event id.
    Column("version", Integer, nullable=False, server_default="1"),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column(
        "created_at", DateTime(timezone=True), nullable=False, server_default=func.now()
    ),
    Column(
        "updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()
    ),
    # Idempotency-Key of the create request, and a hash of its body.
    Column("idempotency_key", Text),
    Column("request_fingerprint", LargeBinary(32)),
    # The job this one retries by hand (POST /notify/{id}/retry).
    Column("retry_of", Uuid, ForeignKey("notify_jobs.id", ondelete="SET NULL")),
    CheckConstraint(f"status IN ({STATUS_WORDS})", name="status"),
    CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts"),
    Index("notify_jobs_owner_status_idx", "owner_id", "status"),
    Index("notify_jobs_owner_created_idx", "owner_id", text("created_at DESC")),
    Index(
        "notify_jobs_claim_idx",
        "run_at",
        "created_at",
        postgresql_where=text("status = 'pending'"),
    ),
    Index(
        "notify_jobs_owner_idempotency_idx",
        "owner_id",
        "idempotency_key",
        unique=True,
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
    Index(
        "notify_jobs_running_worker_idx",
        "worker_id",
        postgresql_where=text("status = 'running'"),
    ),
    # Retention deletes finished jobs oldest first (migration 0002).
    Index(
        "notify_jobs_finished_at_idx",
        "finished_at",
        postgresql_where=text("status IN ('success', 'failed', 'cancelled')"),
    ),
    # Deleting a job sets retry_of to NULL in its retries: find them fast.
    Index(
        "notify_jobs_retry_of_idx",
        "retry_of",
        postgresql_where=text("retry_of IS NOT NULL"),
    ),
)

notify_attempts = Table(
    "notify_attempts",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column(
        "job_id", Uuid, ForeignKey("notify_jobs.id", ondelete="CASCADE"), nullable=False
    ),
    Column("number", Integer, nullable=False),
    Column("worker_id", Uuid),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("response_status", Integer),
    Column("error", Text),
    Column("response_excerpt", LargeBinary),
    Index("notify_attempts_job_id_idx", "job_id", "number", unique=True),
)

signing_secrets = Table(
    "signing_secrets",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column(
        "user_id",
        BigInteger,
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # `whsec_` + base64; deliveries are signed with every unexpired secret.
    Column("secret", Text, nullable=False),
    Column(
        "created_at", DateTime(timezone=True), nullable=False, server_default=func.now()
    ),
    # NULL for the current secret; set to now + 24 h when it is rotated out.
    Column("expires_at", DateTime(timezone=True)),
    Index("signing_secrets_user_id_idx", "user_id"),
)
