"""The migrations build the schema the models describe, and undo it."""

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL

from notify_worker import database
from notify_worker.models import metadata


async def _tables(url: URL) -> set[str]:
    conn = await asyncpg.connect(database.asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


async def test_upgrade_creates_an_empty_notify_jobs_table(empty_db_url: URL) -> None:
    await database.upgrade_async(empty_db_url)
    conn = await asyncpg.connect(database.asyncpg_dsn(empty_db_url))
    try:
        assert await conn.fetchval("SELECT count(*) FROM notify_jobs") == 0
        indexes = {
            row["indexname"]
            for row in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'notify_jobs'"
            )
        }
        assert "notify_jobs_owner_status_idx" in indexes
        default = await conn.fetchval(
            "SELECT column_default FROM information_schema.columns "
            "WHERE table_name = 'notify_jobs' AND column_name = 'status'"
        )
        assert "pending" in default
    finally:
        await conn.close()


async def test_upgrade_downgrade_upgrade_again(empty_db_url: URL) -> None:
    await database.upgrade_async(empty_db_url)
    assert {"notify_jobs", "users", "api_tokens"} <= await _tables(empty_db_url)

    await database.upgrade_async(empty_db_url, "head")  # idempotent
    import asyncio

    await asyncio.to_thread(database.downgrade, empty_db_url, "base")
    assert await _tables(empty_db_url) <= {"alembic_version"}

    await database.upgrade_async(empty_db_url)
    assert "notify_jobs" in await _tables(empty_db_url)


async def test_the_models_match_the_migrated_schema(db_url: URL) -> None:
    engine = database.create_engine(db_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync), metadata
                )
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_a_status_outside_the_five_is_refused_by_the_database(
    db_url: URL,
) -> None:
    conn = await asyncpg.connect(database.asyncpg_dsn(db_url))
    try:
        user_id = await conn.fetchval(
            "INSERT INTO users (name) VALUES ('x') RETURNING id"
        )
        try:
            await conn.execute(
                "INSERT INTO notify_jobs (owner_id, target_url, payload, status) "
                "VALUES ($1, 'http://x', '{}', 'done')",
                user_id,
            )
        except asyncpg.CheckViolationError:
            pass
        else:
            raise AssertionError("the CHECK constraint let 'done' in")
    finally:
        await conn.close()
