"""A killed service: its running job ends `failed` with `server restarted`."""

import aiohttp
import asyncpg
from sqlalchemy import URL

from notify_worker import database, service

from ..helpers import TargetServer, eventually, spawn, wait_healthy


async def _new_owner_token(db_url: URL) -> str:
    engine = database.create_engine(db_url)
    try:
        async with engine.begin() as conn:
            _user, token = await service.create_user(conn, "restart-owner")
    finally:
        await engine.dispose()
    return token


async def test_a_job_running_when_the_service_is_killed_ends_server_restarted(
    db_url: URL, tmp_path, target: TargetServer
) -> None:
    token = await _new_owner_token(db_url)
    auth = {"Authorization": f"Bearer {token}"}
    first = spawn(["serve"], db_url, tmp_path / "first", NOTIFY_MAX_CONCURRENT="1")
    try:
        await wait_healthy(first)
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.post(
                f"{first.base_url}/notify",
                json={"target_url": target.url("/hang"), "payload": {"n": 0}},
            ) as response:
                in_flight = (await response.json())["id"]
            await eventually(lambda: _arrived(target, 1))
            behind = []
            for n in range(3):
                async with http.post(
                    f"{first.base_url}/notify",
                    json={"target_url": target.url("/ok"), "payload": {"n": n + 1}},
                ) as response:
                    behind.append((await response.json())["id"])
    finally:
        first.kill()

    second = spawn(["serve"], db_url, tmp_path / "second")
    try:
        await wait_healthy(second)
        async with aiohttp.ClientSession(headers=auth) as http:

            async def finished(job_id: str) -> dict | None:
                async with http.get(f"{second.base_url}/notify/{job_id}") as response:
                    job = await response.json()
                return (
                    job if job["status"] in {"success", "failed", "cancelled"} else None
                )

            crashed = await eventually(lambda: finished(in_flight))
            assert crashed["status"] == "failed"
            assert crashed["error_message"] == "server restarted"
            # The attempt the killed process never recorded is in the history.
            [lost] = crashed["attempt_history"]
            assert (lost["number"], lost["error"]) == (1, "server restarted")
            for job_id in behind:
                assert (await eventually(lambda j=job_id: finished(j)))[
                    "status"
                ] == "success"
    finally:
        second.terminate()

    ids = target.job_ids()
    assert ids.count(in_flight) == 1
    assert sorted(ids[1:]) == sorted(behind)


async def _arrived(target: TargetServer, count: int) -> bool:
    return len(target.received) >= count


async def test_a_stale_worker_row_with_no_live_process_is_rescued_at_start(
    db_url: URL, tmp_path
) -> None:
    """A running job whose worker record points at a dead pid, as after a crash."""
    token = await _new_owner_token(db_url)
    conn = await asyncpg.connect(database.asyncpg_dsn(db_url))
    try:
        owner = await conn.fetchval("SELECT id FROM users")
        worker_id = await conn.fetchval(
            "INSERT INTO notify_workers (id, hostname, pid) "
            "VALUES (gen_random_uuid(), $1, 2147483646) RETURNING id",
            __import__("socket").gethostname(),
        )
        job_id = await conn.fetchval(
            "INSERT INTO notify_jobs (owner_id, target_url, payload, status, worker_id, "
            "attempts, started_at) VALUES ($1, 'http://127.0.0.1:9/', '{}', 'running', $2, "
            "1, now()) RETURNING id",
            owner,
            worker_id,
        )
    finally:
        await conn.close()
    proc = spawn(["serve"], db_url, tmp_path)
    try:
        await wait_healthy(proc)
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"}
        ) as http:
            async with http.get(f"{proc.base_url}/notify/{job_id}") as response:
                job = await response.json()
    finally:
        proc.terminate()
    assert job["status"] == "failed"
    assert job["error_message"] == "server restarted"
