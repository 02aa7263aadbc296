"""Users, API tokens, signing secrets, workers, notify jobs and their attempts.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)

# Every change of a job's status bumps its version; this trigger turns each
# such change into a notification inside the same transaction, so events
# reach listeners only once the change is committed, whoever made it.
# The error message is cut so the payload stays under PostgreSQL's 8000
# byte limit for NOTIFY.
PUBLISH_FUNCTION = """
CREATE FUNCTION notify_jobs_publish() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('notify_job_events', json_build_object(
        'id', NEW.id,
        'owner_id', NEW.owner_id,
        'status', NEW.status,
        'version', NEW.version,
        'error_message', left(NEW.error_message, 1000),
        'attempts', NEW.attempts,
        'max_attempts', NEW.max_attempts,
        'run_at', NEW.run_at,
        'worker_id', NEW.worker_id
    )::text);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column(
            "created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("id", name="users_pkey"),
        sa.UniqueConstraint("name", name="users_name_key"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False),
        sa.Column(
            "created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()
        ),
        sa.Column("revoked_at", TIMESTAMP),
        sa.Column("session_generation", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="api_tokens_pkey"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="api_tokens_user_id_fkey",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("token_hash", name="api_tokens_token_hash_key"),
    )
    op.create_index("api_tokens_user_id_idx", "api_tokens", ["user_id"])
    op.create_table(
        "notify_workers",
        sa.Column("id", sa.Uuid, nullable=False),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("process_started", sa.BigInteger),
        sa.Column(
            "started_at", TIMESTAMP, nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "heartbeat_at", TIMESTAMP, nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("id", name="notify_workers_pkey"),
    )
    op.create_table(
        "notify_jobs",
        sa.Column(
            "id", sa.Uuid, nullable=False, server_default=sa.text("gen_random_uuid()")
        ),
        sa.Column("owner_id", sa.BigInteger, nullable=False),
        sa.Column("target_url", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("error_message", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="1"),
        sa.Column("run_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.Column("worker_id", sa.Uuid),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("started_at", TIMESTAMP),
        sa.Column("finished_at", TIMESTAMP),
        sa.Column(
            "created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", TIMESTAMP, nullable=False, server_default=sa.func.now()
        ),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("request_fingerprint", sa.LargeBinary(32)),
        sa.Column("retry_of", sa.Uuid),
        sa.PrimaryKeyConstraint("id", name="notify_jobs_pkey"),
        sa.ForeignKeyConstraint(
            ["retry_of"],
            ["notify_jobs.id"],
            name="notify_jobs_retry_of_fkey",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name="notify_jobs_owner_id_fkey",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'success', 'failed', 'cancelled')",
            name="notify_jobs_status_check",
        ),
        sa.CheckConstraint(
            "attempts >= 0 AND max_attempts >= 1", name="notify_jobs_attempts_check"
        ),
    )
    op.create_index(
        "notify_jobs_owner_status_idx", "notify_jobs", ["owner_id", "status"]
    )
    op.create_index(
        "notify_jobs_owner_created_idx",
        "notify_jobs",
        ["owner_id", sa.text("created_at DESC")],
    )
    op.create_index(
        "notify_jobs_claim_idx",
        "notify_jobs",
        ["run_at", "created_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "notify_jobs_owner_idempotency_idx",
        "notify_jobs",
        ["owner_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "notify_jobs_running_worker_idx",
        "notify_jobs",
        ["worker_id"],
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_table(
        "notify_attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("job_id", sa.Uuid, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.Uuid),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("response_status", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("response_excerpt", sa.LargeBinary),
        sa.PrimaryKeyConstraint("id", name="notify_attempts_pkey"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["notify_jobs.id"],
            name="notify_attempts_job_id_fkey",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "notify_attempts_job_id_idx",
        "notify_attempts",
        ["job_id", "number"],
        unique=True,
    )
    op.create_table(
        "signing_secrets",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column(
            "created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()
        ),
        sa.Column("expires_at", TIMESTAMP),
        sa.PrimaryKeyConstraint("id", name="signing_secrets_pkey"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="signing_secrets_user_id_fkey",
            ondelete="CASCADE",
        ),
    )
    op.create_index("signing_secrets_user_id_idx", "signing_secrets", ["user_id"])
    op.execute(PUBLISH_FUNCTION)
    op.execute(
        "CREATE TRIGGER notify_jobs_publish_insert AFTER INSERT ON notify_jobs "
        "FOR EACH ROW EXECUTE FUNCTION notify_jobs_publish()"
    )
    op.execute(
        "CREATE TRIGGER notify_jobs_publish_update AFTER UPDATE ON notify_jobs "
        "FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version) "
        "EXECUTE FUNCTION notify_jobs_publish()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER notify_jobs_publish_update ON notify_jobs")
    op.execute("DROP TRIGGER notify_jobs_publish_insert ON notify_jobs")
    op.execute("DROP FUNCTION notify_jobs_publish()")
    op.drop_table("signing_secrets")
    op.drop_table("notify_attempts")
    op.drop_table("notify_jobs")
    op.drop_table("notify_workers")
    op.drop_table("api_tokens")
    op.drop_table("users")
