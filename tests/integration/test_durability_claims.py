"""A claim that committed but whose answer never came back."""

import logging
import uuid
from datetime import UTC, datetime

import pytest

from notify_worker import service

from ..helpers import ServiceFactory, TargetServer


async def test_a_job_claimed_for_a_worker_that_never_heard_is_handed_back_and_run(
    services: ServiceFactory, target: TargetServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The claim runs on another connection under the worker's id, as when the
    worker's connection dropped after the commit: the row says running, the
    worker has no attempt for it."""
    svc = await services.start()
    worker = svc.runtime.worker
    async with svc.runtime.engine.begin() as conn:
        job = await service.create_job(conn, svc.user_id, target.url("/ok"), "{}")
        claimed = await service.claim_jobs(conn, worker.id, 1)
    assert [c.id for c in claimed] == [job.id]

    with caplog.at_level(logging.WARNING, logger="notify_worker.worker"):
        final = await svc.wait_status(str(job.id))

    assert final["status"] == "success"
    # The lost claim's attempt was never made, so it was given back.
    assert final["attempts"] == 1
    assert target.job_ids() == [str(job.id)]
    released = [
        r
        for r in caplog.records
        if getattr(r, "action", "") == "job_unstarted_released"
    ]
    assert [r.job_id for r in released] == [str(job.id)]


async def test_an_attempt_written_again_after_a_lost_commit_answer_is_kept_once(
    engine, db_url
) -> None:
    """The worker retries an outcome write whose commit it never heard of."""
    async with engine.begin() as conn:
        user, _token = await service.create_user(conn, "retry-owner")
        job = await service.create_job(conn, user.id, "http://127.0.0.1:9/", "{}")
        worker_id = uuid.uuid4()
        await service.claim_jobs(conn, worker_id, 1)
    now = datetime.now(UTC)
    attempt = service.Attempt(job.id, 1, now, now, 5, 200, None, b"ok")
    for _write in range(2):
        async with engine.begin() as conn:
            await service.record_attempt(conn, attempt, worker_id)
            await service.mark_success(conn, job.id, worker_id)

    async with engine.connect() as conn:
        attempts = await service.list_attempts(conn, job.id)
        final = await service.get_job(conn, job.id)
    assert [a.number for a in attempts] == [1]
    assert final is not None and final.status == "success"
