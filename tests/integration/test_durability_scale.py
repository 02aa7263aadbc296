"""Three worker processes and a web process share one queue."""

import collections

import pytest
from sqlalchemy import URL

from ..helpers import TargetServer, spawn, wait_healthy
from .durability import (
    Api,
    connect,
    new_owner_token,
    stop_quietly,
    wait_new_worker,
    wait_statuses,
)

JOBS = 2000
WORKERS = 3


# About a minute on a loaded 2-core machine, most of it in 2,000 API calls.
@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_two_thousand_jobs_over_three_workers_each_reach_the_target_once(
    db_url: URL, tmp_path, target: TargetServer
) -> None:
    token = await new_owner_token(db_url)
    web = spawn(["serve", "--no-worker"], db_url, tmp_path / "web")
    workers = []
    try:
        await wait_healthy(web)
        known: list = []
        for n in range(WORKERS):
            proc = spawn(
                ["worker"], db_url, tmp_path / f"worker{n}", NOTIFY_MAX_CONCURRENT="16"
            )
            workers.append(proc)
            known.append(await wait_new_worker(db_url, proc, known))
        async with Api(web.base_url, token) as api:
            ids = await api.create_many(target.url("/ok"), JOBS, parallel=16)
        rows = await wait_statuses(db_url, ids, timeout=60)
        assert all(proc.process.poll() is None for proc in [web, *workers])
        holders = await _attempt_workers(db_url)
    finally:
        stop_quietly(web, *workers)

    assert collections.Counter(row["status"] for row in rows.values()) == {
        "success": JOBS
    }
    seen = collections.Counter(target.job_ids())
    assert set(seen) == set(ids)
    assert set(seen.values()) == {1}
    # Every worker took part, and each attempt was recorded once.
    assert set(holders) == set(known)
    assert sum(holders.values()) == JOBS


async def _attempt_workers(db_url: URL) -> dict:
    conn = await connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT worker_id, count(*) AS n FROM notify_attempts GROUP BY worker_id"
        )
    finally:
        await conn.close()
    return {row["worker_id"]: row["n"] for row in rows}
