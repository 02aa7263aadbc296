"""A worker killed with SIGKILL: the other rescues its jobs, and only its jobs."""

import asyncio

from sqlalchemy import URL

from ..helpers import ServiceFactory, TargetServer, eventually, spawn
from .durability import (
    Api,
    connect,
    jobs_by_id,
    stop_quietly,
    wait_new_worker,
    wait_statuses,
)

STALE_SECS = 4.0
SURVIVOR_SECS = 6.0


async def test_a_killed_worker_on_another_host_is_rescued_after_the_heartbeat_limit(
    services: ServiceFactory, target: TargetServer, db_url: URL, tmp_path
) -> None:
    """The killed worker's row says another host, so its pid cannot be checked."""
    web = await services.start(run_worker=False)
    settings = {
        "NOTIFY_MAX_CONCURRENT": "2",
        "NOTIFY_WORKER_STALE_SECS": str(STALE_SECS),
    }
    doomed = spawn(["worker"], db_url, tmp_path / "doomed", **settings)
    survivor = None
    try:
        doomed_id = await wait_new_worker(db_url, doomed)
        await _move_to_another_host(db_url, doomed_id)
        async with Api(web.base_url, web.token) as api:
            lost = await api.create_many(target.url("/hang"), 2)
            await wait_statuses(db_url, lost, {"running"})

            survivor = spawn(["worker"], db_url, tmp_path / "survivor", **settings)
            survivor_id = await wait_new_worker(db_url, survivor, [doomed_id])
            kept = await api.create_many(target.url(f"/slow/{SURVIVOR_SECS}"), 2)
            await wait_statuses(db_url, kept, {"running"})
        await eventually(lambda: _arrived(target, 4))
        rows = await jobs_by_id(db_url, lost + kept)
        assert {rows[j]["worker_id"] for j in lost} == {doomed_id}
        assert {rows[j]["worker_id"] for j in kept} == {survivor_id}

        doomed.kill()
        # Within the heartbeat limit a silent worker may only be slow.
        await asyncio.sleep(STALE_SECS / 3)
        early = await jobs_by_id(db_url, lost)
        assert all(row["status"] == "running" for row in early.values())

        rescued = await wait_statuses(db_url, lost, timeout=STALE_SECS + 10)
        finished = await wait_statuses(db_url, kept, timeout=SURVIVOR_SECS + 10)
    finally:
        stop_quietly(doomed, *([survivor] if survivor else []))

    for row in rescued.values():
        assert row["status"] == "failed"
        assert row["error_message"] == "server restarted"
    for row in finished.values():
        assert row["status"] == "success"
        assert row["error_message"] is None
        assert row["attempts"] == 1
    ids = target.job_ids()
    assert sorted(ids) == sorted(lost + kept)
    assert "job_rescued" in survivor.log()


async def _move_to_another_host(db_url: URL, worker_id) -> None:
    conn = await connect(db_url)
    try:
        await conn.execute(
            "UPDATE notify_workers SET hostname = 'elsewhere.invalid' WHERE id = $1",
            worker_id,
        )
    finally:
        await conn.close()


async def _arrived(target: TargetServer, count: int) -> bool:
    return len(target.received) >= count
