"""SIGTERM and SIGINT: a grace period for attempts, then a hand-back; twice is now."""

import asyncio
import signal
import time
import uuid

import pytest
from sqlalchemy import URL

from ..helpers import (
    ServiceFactory,
    TargetServer,
    eventually,
    iter_events,
    spawn,
    wait_healthy,
)
from .durability import (
    Api,
    connect,
    database_now,
    jobs_by_id,
    new_owner_token,
    stop_quietly,
    wait_exit,
    wait_new_worker,
    wait_statuses,
)

GRACE_SECS = 3.0
# Long enough that only a hand-back, never the target, can end it in time.
LONG_SECS = 20.0


async def test_sigterm_lets_attempts_finish_in_the_grace_and_hands_back_the_rest(
    services: ServiceFactory, target: TargetServer, db_url: URL, tmp_path
) -> None:
    web = await services.start(run_worker=False)
    first = spawn(
        ["worker"],
        db_url,
        tmp_path / "first",
        NOTIFY_MAX_CONCURRENT="4",
        NOTIFY_SHUTDOWN_GRACE_SECS=str(GRACE_SECS),
    )
    second = None
    try:
        first_id = await wait_new_worker(db_url, first)
        async with Api(web.base_url, web.token) as api:
            quick = await api.create_many(target.url("/slow/1.5"), 2)
            slow = await api.create_many(target.url("/slow/5"), 2)
            await wait_statuses(db_url, quick + slow, {"running"})
            await eventually(lambda: _arrived(target, 4))

            signalled_at = await database_now(db_url)
            first.process.send_signal(signal.SIGTERM)
            # It stops claiming at once: a job created now stays pending.
            late = await api.create(target.url("/ok"))
            # And it keeps heartbeating through the grace.
            await eventually(lambda: _heartbeat_after(db_url, first_id, signalled_at))
            assert first.process.poll() is None

            assert await wait_exit(first, GRACE_SECS + 10) == 0
            rows = await jobs_by_id(db_url, quick + slow + [late])
            for job_id in quick:
                assert rows[job_id]["status"] == "success"
            for job_id in slow + [late]:
                assert rows[job_id]["status"] == "pending"
                assert rows[job_id]["attempts"] == 0
                assert rows[job_id]["worker_id"] is None
            assert target.cancelled_requests == 2

            second = spawn(["worker"], db_url, tmp_path / "second")
            done = await wait_statuses(db_url, slow + [late], timeout=30)
    finally:
        stop_quietly(first, *([second] if second else []))
    assert all(row["status"] == "success" for row in done.values())
    assert "worker_stopping" in first.log()
    ids = target.job_ids()
    assert [ids.count(job_id) for job_id in quick] == [1, 1]
    assert [ids.count(job_id) for job_id in slow] == [2, 2]


async def test_serve_ends_its_streams_and_hands_back_on_sigterm(
    db_url: URL, tmp_path, target: TargetServer
) -> None:
    """Open streams do not hold the shutdown until uvicorn's graceful timeout."""
    token = await new_owner_token(db_url)
    proc = spawn(["serve"], db_url, tmp_path, NOTIFY_SHUTDOWN_GRACE_SECS="1")
    try:
        await wait_healthy(proc)
        async with Api(proc.base_url, token) as api:
            job_id = await api.create(target.url(f"/slow/{LONG_SECS}"))
            await eventually(lambda: _arrived(target, 1))
            async with api.session.get(
                f"{proc.base_url}/notify/{job_id}/stream"
            ) as stream:
                events = iter_events(stream)
                assert (await anext(events)).data["status"] == "running"
                proc.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                # uvicorn's graceful timeout is the grace + 5 s: the stream
                # must end well before it.
                async with asyncio.timeout(4):
                    rest = [event async for event in events]
                ended_after = time.monotonic() - signalled
        assert await wait_exit(proc, 10) == 0
    finally:
        stop_quietly(proc)
    assert ended_after < 4
    assert all(event.data["status"] != "success" for event in rest)
    row = (await jobs_by_id(db_url, [job_id]))[job_id]
    assert row["status"] == "pending"
    assert target.cancelled_requests == 1


@pytest.mark.parametrize(
    ("command", "first", "second"),
    [
        (["worker"], signal.SIGTERM, signal.SIGINT),
        # uvicorn's own force-exit would skip the lifespan, and the hand-back.
        (["serve"], signal.SIGINT, signal.SIGTERM),
    ],
    ids=["worker", "serve"],
)
async def test_a_second_signal_stops_at_once_and_hands_back(
    command: list[str],
    first: signal.Signals,
    second: signal.Signals,
    services: ServiceFactory,
    target: TargetServer,
    db_url: URL,
    tmp_path,
) -> None:
    proc = spawn(command, db_url, tmp_path, NOTIFY_SHUTDOWN_GRACE_SECS="600")
    try:
        if command == ["serve"]:
            await wait_healthy(proc)
            base_url, token = proc.base_url, await new_owner_token(db_url)
        else:
            web = await services.start(run_worker=False)
            await wait_new_worker(db_url, proc)
            base_url, token = web.base_url, web.token
        async with Api(base_url, token) as api:
            job_id = await api.create(target.url(f"/slow/{LONG_SECS}"))
            await eventually(lambda: _arrived(target, 1))
        proc.process.send_signal(first)
        await eventually(lambda: _logged(proc, "worker_stopping"))
        proc.process.send_signal(second)
        assert await wait_exit(proc, 15) == 0
    finally:
        stop_quietly(proc)
    row = (await jobs_by_id(db_url, [job_id]))[job_id]
    assert row["status"] == "pending"
    assert row["attempts"] == 0
    assert "shutdown_forced" in proc.log()


async def _arrived(target: TargetServer, count: int) -> bool:
    return len(target.received) >= count


async def _logged(proc, text: str) -> bool:
    return text in proc.log()


async def _heartbeat_after(db_url: URL, worker_id: uuid.UUID, moment) -> bool:
    conn = await connect(db_url)
    try:
        beat = await conn.fetchval(
            "SELECT heartbeat_at FROM notify_workers WHERE id = $1", worker_id
        )
    finally:
        await conn.close()
    return beat is not None and beat > moment
