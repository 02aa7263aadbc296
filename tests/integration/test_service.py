"""The service layer against a real database: the tutorial's checks and the guards."""

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from notify_worker import service
from notify_worker.status import JobStatus


@pytest.fixture
async def owner(engine: AsyncEngine) -> service.User:
    async with engine.begin() as conn:
        user, _token = await service.create_user(conn, f"owner-{uuid.uuid4().hex[:6]}")
    return user


async def _job(engine: AsyncEngine, owner: service.User) -> service.Job:
    async with engine.begin() as conn:
        return await service.create_job(
            conn, owner.id, "http://127.0.0.1:9/", '{"a": 1}'
        )


async def test_a_new_job_is_pending_without_started_at(
    engine: AsyncEngine, owner: service.User
) -> None:
    job = await _job(engine, owner)
    assert job.status is JobStatus.PENDING
    assert job.started_at is None and job.finished_at is None
    assert job.attempts == 0
    assert job.payload == '{"a": 1}'


async def test_mark_running_sets_started_at(
    engine: AsyncEngine, owner: service.User
) -> None:
    job = await _job(engine, owner)
    worker = uuid.uuid4()
    async with engine.begin() as conn:
        running = await service.mark_running(conn, job.id, worker)
    assert running is not None
    assert running.status is JobStatus.RUNNING
    assert running.started_at is not None
    assert running.attempts == 1
    assert running.worker_id == worker


async def test_a_cancelled_pending_job_reports_cancelled(
    engine: AsyncEngine, owner: service.User
) -> None:
    job = await _job(engine, owner)
    async with engine.begin() as conn:
        assert not await service.is_cancelled(conn, job.id)
        cancelled = await service.cancel_job(conn, job.id, owner.id)
        assert await service.is_cancelled(conn, job.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.finished_at is not None


async def test_success_and_failed_set_finished_at(
    engine: AsyncEngine, owner: service.User
) -> None:
    worker = uuid.uuid4()
    first, second = await _job(engine, owner), await _job(engine, owner)
    async with engine.begin() as conn:
        await service.mark_running(conn, first.id, worker)
        await service.mark_running(conn, second.id, worker)
        done = await service.mark_success(conn, first.id, worker)
        failed = await service.mark_failed(
            conn, second.id, worker, "HTTP 500 Internal Server Error"
        )
    assert done is not None and done.status is JobStatus.SUCCESS and done.finished_at
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error_message == "HTTP 500 Internal Server Error"


async def test_a_late_success_never_overwrites_a_cancel(
    engine: AsyncEngine, owner: service.User
) -> None:
    worker = uuid.uuid4()
    job = await _job(engine, owner)
    async with engine.begin() as conn:
        await service.mark_running(conn, job.id, worker)
        await service.cancel_job(conn, job.id, owner.id)
        assert await service.mark_success(conn, job.id, worker) is None
        assert await service.mark_failed(conn, job.id, worker, "x") is None
        assert await service.mark_running(conn, job.id, worker) is None
        current = await service.get_job(conn, job.id)
    assert current is not None and current.status is JobStatus.CANCELLED


async def test_cancelling_a_finished_job_is_an_invalid_transition(
    engine: AsyncEngine, owner: service.User
) -> None:
    worker = uuid.uuid4()
    job = await _job(engine, owner)
    async with engine.begin() as conn:
        await service.mark_running(conn, job.id, worker)
        await service.mark_success(conn, job.id, worker)
        with pytest.raises(service.InvalidTransition) as caught:
            await service.cancel_job(conn, job.id, owner.id)
    assert caught.value.job.status is JobStatus.SUCCESS


async def test_only_the_holder_completes_a_job(
    engine: AsyncEngine, owner: service.User
) -> None:
    holder, other = uuid.uuid4(), uuid.uuid4()
    job = await _job(engine, owner)
    async with engine.begin() as conn:
        await service.mark_running(conn, job.id, holder)
        assert await service.mark_success(conn, job.id, other) is None
        assert await service.mark_success(conn, job.id, holder) is not None


async def test_another_owner_cannot_see_or_cancel(
    engine: AsyncEngine, owner: service.User
) -> None:
    job = await _job(engine, owner)
    async with engine.begin() as conn:
        stranger, _ = await service.create_user(conn, "stranger")
        assert await service.get_job(conn, job.id, stranger.id) is None
        with pytest.raises(service.NotFound):
            await service.cancel_job(conn, job.id, stranger.id)
        assert (await service.get_job(conn, job.id)).status is JobStatus.PENDING


async def test_claims_take_due_jobs_oldest_first_and_never_twice(
    engine: AsyncEngine, owner: service.User
) -> None:
    jobs = [await _job(engine, owner) for _ in range(5)]
    first, second = uuid.uuid4(), uuid.uuid4()
    async with engine.begin() as conn:
        taken = await service.claim_jobs(conn, first, 3)
    async with engine.begin() as conn:
        rest = await service.claim_jobs(conn, second, 10)
    assert [job.id for job in taken] == [job.id for job in jobs[:3]]
    assert {job.id for job in rest} == {job.id for job in jobs[3:]}
    assert all(job.status is JobStatus.RUNNING for job in taken + rest)


async def test_tokens_are_stored_as_hashes_and_can_be_revoked(
    engine: AsyncEngine, owner: service.User
) -> None:
    async with engine.begin() as conn:
        token = await service.create_token(conn, owner.id)
        found = await service.authenticate(conn, token)
        assert found is not None and found[0].id == owner.id
        stored = await conn.exec_driver_sql("SELECT token_hash FROM api_tokens")
        assert all(token.encode() not in bytes(row[0]) for row in stored)
        await service.revoke_tokens(conn, owner.id)
        assert await service.authenticate(conn, token) is None
        assert await service.authenticate(conn, token + "x") is None
