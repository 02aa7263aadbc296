"""GET /metrics reflects a run and the table; GET /readyz tells when to stop routing."""

import asyncio
import contextlib
from typing import Any

import asyncpg
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import URL

from notify_worker import database

from ..helpers import RunningService, ServiceFactory, TargetServer, eventually


async def scrape(svc: RunningService) -> dict[tuple[str, tuple], float]:
    """Every sample, keyed by its name and its sorted labels."""
    async with svc.session.get(f"{svc.base_url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def by_status(samples: dict, name: str) -> dict[str, float]:
    return {
        dict(labels)["status"]: value
        for (sample, labels), value in samples.items()
        if sample == name
    }


async def table_counts(db_url: URL) -> dict[str, int]:
    conn = await asyncpg.connect(database.asyncpg_dsn(db_url))
    try:
        rows = await conn.fetch("SELECT status, count(*) FROM notify_jobs GROUP BY 1")
        attempts = await conn.fetchval("SELECT count(*) FROM notify_attempts")
    finally:
        await conn.close()
    return {"attempts": attempts, **{row[0]: row[1] for row in rows}}


async def post(svc: RunningService, path: str, body: Any = None) -> Any:
    async with svc.session.post(
        f"{svc.base_url}{path}", json=body, headers=svc.auth
    ) as response:
        return await response.json()


async def test_metrics_reflect_a_run_and_counts_by_status_match_the_table(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    svc = await services.start(retry_schedule="1h")
    ok = [await svc.create(target.url("/ok")) for _ in range(3)]
    bad = [await svc.create(target.url("/status/400")) for _ in range(2)]
    waiting = await svc.create(target.url("/status/503"), max_attempts=2)
    hanging = await svc.create(target.url("/hang"))
    for job in ok + bad:
        await svc.wait_status(job["id"])
    await eventually(lambda: _attempted(svc, waiting["id"]))
    await eventually(lambda: _arrived(target, "/hang"))

    # One attempt in flight and one stream open, seen at scrape time.
    stream = asyncio.create_task(_watch(svc, waiting["id"]))
    during = await eventually(lambda: _with_stream(svc))
    assert during[("notify_attempts_in_flight", ())] == 1
    await post(svc, f"/notify/{hanging['id']}/cancel")
    await svc.wait_status(hanging["id"])
    await eventually(lambda: _no_attempt_in_flight(svc))
    stream.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stream

    samples = await scrape(svc)
    table = await table_counts(db_url)
    assert by_status(samples, "notify_jobs") == {
        status: table.get(status, 0)
        for status in ("pending", "running", "success", "failed", "cancelled")
    }
    assert table["success"] == 3 and table["failed"] == 2
    assert table["pending"] == 1 and table["cancelled"] == 1
    assert samples[("notify_jobs_created_total", ())] == 7
    assert by_status(samples, "notify_jobs_finished_total") == {
        "success": 3,
        "failed": 2,
        "cancelled": 1,
    }
    # The cancelled attempt was aborted: it is in the history (one more row)
    # but was never timed to an answer.
    durations = sum(
        value
        for (name, _labels), value in samples.items()
        if name == "notify_attempt_duration_seconds_count"
    )
    assert durations == 6
    assert table["attempts"] == 7
    assert samples[("notify_pending_jobs", ())] == 1
    assert samples[("notify_pending_due_jobs", ())] == 0
    assert samples[("notify_oldest_pending_age_seconds", ())] == 0
    assert samples[("notify_db_pool_size", ())] >= 1
    assert ("notify_db_pool_connections", (("state", "in_use"),)) in samples
    assert samples[("notify_table_up", ())] == 1


async def test_another_service_on_the_database_sees_the_same_table_figures(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    worker_side = await services.start()
    web_only = await services.start(run_worker=False)
    for path in ("/ok", "/ok", "/status/500"):
        job = await worker_side.create(target.url(path))
        await worker_side.wait_status(job["id"])

    samples = await scrape(web_only)

    assert by_status(samples, "notify_jobs")["success"] == 2
    assert by_status(samples, "notify_jobs")["failed"] == 1
    # What a process did itself is its own: this one delivered nothing.
    assert sum(by_status(samples, "notify_jobs_finished_total").values()) == 0


async def test_the_oldest_due_pending_job_is_measured_from_its_run_time(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    svc = await services.start(run_worker=False)
    await svc.create(target.url("/ok"))
    await svc.create(target.url("/ok"))
    conn = await asyncpg.connect(database.asyncpg_dsn(db_url))
    try:
        await conn.execute(
            "UPDATE notify_jobs SET run_at = now() - interval '90 seconds'"
            " WHERE id = (SELECT id FROM notify_jobs LIMIT 1)"
        )
    finally:
        await conn.close()

    samples = await scrape(svc)

    assert samples[("notify_pending_jobs", ())] == 2
    assert samples[("notify_pending_due_jobs", ())] == 2
    assert 90 <= samples[("notify_oldest_pending_age_seconds", ())] < 200


async def test_readyz_is_503_when_the_worker_stops(services: ServiceFactory) -> None:
    svc = await services.start()
    status, body = await _ready(svc)
    assert (status, body["checks"]) == (200, {"database": "ok", "worker": "ok"})

    assert svc.runtime.worker is not None
    await svc.runtime.worker.stop()

    status, body = await _ready(svc)
    assert status == 503
    assert body["checks"]["worker"] == "stopped"


async def test_readyz_without_a_worker_in_the_process_is_ready(
    services: ServiceFactory,
) -> None:
    svc = await services.start(run_worker=False)
    status, body = await _ready(svc)
    assert status == 200
    assert body["checks"]["worker"] == "not run here"


async def test_readyz_is_503_while_the_database_refuses_connections(
    services: ServiceFactory, db_url: URL, server_url: URL
) -> None:
    svc = await services.start()
    name = db_url.database
    admin = await asyncpg.connect(database.asyncpg_dsn(server_url))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            name,
        )
        status, body = await _ready(svc)
        assert status == 503
        assert body["checks"]["database"].startswith("unavailable")
        # /metrics still answers, and says the table could not be read.
        assert (await scrape(svc))[("notify_table_up", ())] == 0
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()

    async def ready_again() -> bool:
        return (await _ready(svc))[0] == 200

    await eventually(ready_again)


async def _ready(svc: RunningService) -> tuple[int, Any]:
    async with svc.session.get(f"{svc.base_url}/readyz") as response:
        return response.status, await response.json()


async def _attempted(svc: RunningService, job_id: str) -> bool:
    job = await svc.job(job_id)
    return job["status"] == "pending" and job["attempts"] == 1


async def _arrived(target: TargetServer, path: str) -> bool:
    return any(request.path == path for request in target.received)


async def _watch(svc: RunningService, job_id: str) -> None:
    async with svc.session.get(
        f"{svc.base_url}/notify/{job_id}/stream", headers=svc.auth
    ) as response:
        async for _line in response.content:
            pass


async def _with_stream(svc: RunningService) -> dict | None:
    samples = await scrape(svc)
    return samples if samples[("notify_open_streams", ())] == 1 else None


async def _no_attempt_in_flight(svc: RunningService) -> bool:
    return (await scrape(svc))[("notify_attempts_in_flight", ())] == 0
