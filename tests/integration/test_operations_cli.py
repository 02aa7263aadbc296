"""The operator commands, run as real processes: prune and jobs."""

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from notify_worker import service

from .ops_helpers import run_command


async def make_job(
    engine: AsyncEngine, owner_id: int, status: str, *, finished_days_ago: int | None
) -> uuid.UUID:
    """A job put straight into `status`, finished that many days ago."""
    async with engine.begin() as conn:
        job = await service.create_job(conn, owner_id, "http://127.0.0.1:9/", "{}")
        await conn.execute(
            text(
                "UPDATE notify_jobs SET status = :status, attempts = 1,"
                " finished_at = now() - make_interval(days => :days)"
                " WHERE id = :id"
            ),
            {"status": status, "days": finished_days_ago, "id": job.id},
        )
        now = datetime.now(UTC)
        attempt = service.Attempt(job.id, 1, now, now, 5, 500, "HTTP 500", b"no")
        await service.record_attempt(conn, attempt, uuid.uuid4())
    return job.id


async def owner(engine: AsyncEngine, name: str = "ops") -> int:
    async with engine.begin() as conn:
        user, _token = await service.create_user(conn, name)
    return user.id


async def remaining(engine: AsyncEngine) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    async with engine.connect() as conn:
        jobs = set(await conn.scalars(text("SELECT id FROM notify_jobs")))
        attempts = set(await conn.scalars(text("SELECT job_id FROM notify_attempts")))
    return jobs, attempts


async def test_prune_removes_old_finished_jobs_and_keeps_pending_and_running(
    engine: AsyncEngine, db_url: URL, tmp_path: Path
) -> None:
    owner_id = await owner(engine)
    old = [
        await make_job(engine, owner_id, status, finished_days_ago=40)
        for status in ("failed", "success", "cancelled", "success", "failed")
    ]
    recent = await make_job(engine, owner_id, "success", finished_days_ago=2)
    # Pending and running jobs are never pruned, however old their rows.
    pending = await make_job(engine, owner_id, "pending", finished_days_ago=None)
    running = await make_job(engine, owner_id, "running", finished_days_ago=None)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE notify_jobs SET created_at = now() - interval '90 days'")
        )
        # A retry of a pruned job stays, its link to the original cleared.
        retry, _created = await service.retry_job(conn, old[0])

    done = await run_command(
        ["prune", "--older-than", "30d", "--batch-size", "2"], db_url, tmp_path
    )

    assert done.code == 0, done.err
    assert "deleted 5 finished job(s) and 5 attempt(s)" in done.out
    jobs, attempts = await remaining(engine)
    assert jobs == {recent, pending, running, retry.id}
    assert attempts == {recent, pending, running}
    async with engine.connect() as conn:
        kept = await service.get_job(conn, retry.id)
    assert kept is not None and kept.retry_of is None


async def test_prune_refuses_a_bad_duration(db_url: URL, tmp_path: Path) -> None:
    done = await run_command(["prune", "--older-than", "a month"], db_url, tmp_path)
    assert done.code == 2
    assert "--older-than" in done.err


@pytest.mark.slow
async def test_jobs_list_show_cancel_and_retry(
    engine: AsyncEngine, db_url: URL, tmp_path: Path
) -> None:
    alice = await owner(engine, "alice")
    bob = await owner(engine, "bob")
    failed = await make_job(engine, alice, "failed", finished_days_ago=1)
    waiting = await make_job(engine, bob, "pending", finished_days_ago=None)

    listing = await run_command(["jobs", "list"], db_url, tmp_path)
    assert listing.code == 0, listing.err
    header, *rows = listing.out.splitlines()
    assert header.split() == ["ID", "STATUS", "ATTEMPTS", "OWNER", "CREATED", "TARGET"]
    cells = {row.split()[0]: row.split()[1:4] for row in rows}
    assert cells == {
        str(failed): ["failed", "1/1", "alice"],
        str(waiting): ["pending", "1/1", "bob"],
    }
    only = await run_command(["jobs", "list", "--status", "failed"], db_url, tmp_path)
    assert [row.split()[0] for row in only.out.splitlines()[1:]] == [str(failed)]

    shown = await run_command(["jobs", "show", str(failed)], db_url, tmp_path)
    assert shown.code == 0, shown.err
    assert "status    failed" in shown.out
    assert "#  STARTED" in shown.out and "HTTP 500" in shown.out

    cancelled = await run_command(["jobs", "cancel", str(waiting)], db_url, tmp_path)
    assert cancelled.code == 0, cancelled.err
    assert f"job {waiting} cancelled (it was pending)" in cancelled.out
    again = await run_command(["jobs", "cancel", str(waiting)], db_url, tmp_path)
    assert again.code == 1
    assert "already ended: cancelled" in again.err

    retried = await run_command(["jobs", "retry", str(waiting)], db_url, tmp_path)
    assert retried.code == 0, retried.err
    new_id = uuid.UUID(retried.out.split()[1])
    async with engine.connect() as conn:
        new = await service.get_job(conn, new_id)
    assert new is not None and new.retry_of == waiting and new.owner_id == bob

    missing = await run_command(["jobs", "show", str(uuid.uuid4())], db_url, tmp_path)
    assert missing.code == 1
    assert "no job" in missing.err
