"""Alembic environment: runs migrations over asyncpg, one migrator at a time."""

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from notify_worker.models import metadata

# Any constant shared by every migrator; two processes starting at once
# (a web and a worker) must not both run the same migration.
MIGRATION_LOCK_ID = 0x6E6F74696679


def run_migrations(connection: Connection) -> None:
    # A session-level lock, held until the migrations are committed.
    connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    connection.commit()
    try:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.execute(
            text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID}
        )
        connection.commit()


async def run_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None, "database.alembic_config() sets sqlalchemy.url"
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(run_migrations)
    await engine.dispose()


asyncio.run(run_online())
