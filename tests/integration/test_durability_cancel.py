"""Cancels racing workers, cancels of running jobs, and timeouts told apart."""

import asyncio
import time
import uuid

from sqlalchemy import URL

from ..helpers import RunningService, ServiceFactory, TargetServer, eventually, spawn
from .durability import Api, connect, stop_quietly, wait_new_worker, wait_statuses

SLOW_SECS = 3.0


async def test_a_job_cancelled_while_pending_never_reaches_the_target(
    services: ServiceFactory, target: TargetServer, db_url: URL, tmp_path
) -> None:
    """500 create-then-cancel races against two worker processes.

    The web process has no worker of its own: the workers hear of each job
    through LISTEN/NOTIFY. Their few permits and a target that takes a
    moment keep a short queue, so claims and cancels meet at its head.
    """
    svc = await services.start(run_worker=False)
    workers = [
        spawn(["worker"], db_url, tmp_path / f"w{n}", NOTIFY_MAX_CONCURRENT="2")
        for n in range(2)
    ]
    try:
        known: list = []
        for proc in workers:
            known.append(await wait_new_worker(db_url, proc, known))
        outcomes: dict[str, tuple[int, dict]] = {}
        numbers = iter(range(500))
        async with Api(svc.base_url, svc.token) as api:

            async def race() -> None:
                for n in numbers:
                    job_id = await api.create(target.url("/slow/0.05"), {"n": n})
                    outcomes[job_id] = await api.cancel(job_id)

            await asyncio.gather(*(race() for _ in range(8)))
            rows = await wait_statuses(db_url, outcomes)
    finally:
        stop_quietly(*workers)

    # A cancel that found the job pending answers a job never started.
    cancelled_pending = {
        job_id
        for job_id, (status, job) in outcomes.items()
        if status == 200 and job["attempts"] == 0 and job["started_at"] is None
    }
    received = set(target.job_ids())
    assert cancelled_pending, "no cancel ever beat the workers"
    assert received, "the workers never beat a cancel"
    assert not cancelled_pending & received
    for job_id, (status, job) in outcomes.items():
        if status == 409:
            assert job["job"]["status"] in {"success", "failed"}
            assert rows[job_id]["status"] == job["job"]["status"]
        else:
            assert status == 200
            assert rows[job_id]["status"] == "cancelled"
    assert received <= set(outcomes)
    assert len(target.job_ids()) == len(received), "a job was sent twice"


async def test_a_running_job_cancelled_is_aborted_and_stays_cancelled(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    svc, job = await _running_slow_job(services, target)
    arrived = target.received[0].at

    async with Api(svc.base_url, svc.token) as api:
        status, cancelled = await api.cancel(job["id"])
    assert status == 200
    assert cancelled["status"] == "cancelled"
    assert cancelled["error_message"] == "cancelled by owner"
    # The worker heard the cancel and dropped the request (within a second).
    await eventually(lambda: _aborted(target, 1), timeout=2.0, every=0.02)

    # Past the moment the target would have answered 200: still cancelled.
    await asyncio.sleep(max(0.0, arrived + SLOW_SECS + 0.5 - time.monotonic()))
    final = await svc.job(job["id"])
    assert final["status"] == "cancelled"
    assert final["error_message"] == "cancelled by owner"
    # The request it cut short is in the history, with no answer.
    [attempt] = final["attempt_history"]
    assert attempt["error"] == "aborted: cancelled by owner"
    assert attempt["response_status"] is None
    assert svc.runtime.worker.in_flight == 0


async def test_a_cancel_the_worker_missed_is_found_by_its_periodic_check(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    """The cancel's notification never comes: triggers are off for its UPDATE."""
    svc, job = await _running_slow_job(services, target)

    conn = await connect(db_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE notify_jobs SET status = 'cancelled', finished_at = now(), "
                "error_message = 'cancelled by owner', version = version + 1 "
                "WHERE id = $1",
                uuid.UUID(job["id"]),
            )
    finally:
        await conn.close()

    await eventually(lambda: _aborted(target, 1), timeout=3.0, every=0.02)
    await asyncio.sleep(SLOW_SECS)
    final = await svc.job(job["id"])
    assert final["status"] == "cancelled"
    assert [a["error"] for a in final["attempt_history"]] == [
        "aborted: cancelled by owner"
    ]


async def test_a_job_that_timed_out_is_failed_not_cancelled(
    services: ServiceFactory, target: TargetServer
) -> None:
    svc = await services.start(timeout_secs=1)
    timed_out = await svc.create(target.url("/hang"))
    cancelled = await svc.create(target.url("/hang"))
    await eventually(lambda: _count(target, 2))
    async with Api(svc.base_url, svc.token) as api:
        assert (await api.cancel(cancelled["id"]))[0] == 200

    failed = await svc.wait_status(timed_out["id"])
    assert failed["status"] == "failed"
    assert failed["error_message"] == "timeout after 1s"
    assert failed["attempt_history"][0]["error"] == "timeout after 1s"
    other = await svc.job(cancelled["id"])
    assert other["status"] == "cancelled"
    assert other["error_message"] == "cancelled by owner"


async def _running_slow_job(
    services: ServiceFactory, target: TargetServer
) -> tuple[RunningService, dict]:
    """A service whose one job is running: the target has the request."""
    svc = await services.start()
    job = await svc.create(target.url(f"/slow/{SLOW_SECS}"))
    await svc.wait_status(job["id"], {"running"})
    await eventually(lambda: _count(target, 1))
    return svc, job


async def _count(target: TargetServer, n: int) -> bool:
    return len(target.received) >= n


async def _aborted(target: TargetServer, n: int) -> bool:
    return target.cancelled_requests >= n
