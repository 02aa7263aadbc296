"""The SSE streams against the real service: fan-out, keep-alives, endings.

Every read runs under a timeout, so a stream that hangs fails its test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
from sqlalchemy import URL
from starlette.middleware.gzip import GZipMiddleware

from notify_worker import database, service
from notify_worker.events import StatusEvent
from notify_worker.status import JobStatus

from ..helpers import (
    RunningService,
    ServiceFactory,
    SseEvent,
    TargetServer,
    eventually,
    iter_events,
    read_events,
    spawn,
)


def stream_url(svc: RunningService, job_id: str) -> str:
    return f"{svc.base_url}/notify/{job_id}/stream"


def stream_tasks() -> list[asyncio.Task]:
    """Tasks of this loop that serve an HTTP request or an SSE body.

    The tests run uvicorn in their own event loop, so a stream left behind
    by a client that went away would show up here.
    """
    names = ("RequestResponseCycle.run_asgi", "StreamingResponse")
    return [
        task
        for task in asyncio.all_tasks()
        if any(name in task.get_coro().__qualname__ for name in names)
    ]


async def first_event(response: aiohttp.ClientResponse) -> SseEvent:
    async with asyncio.timeout(10):
        async for event in iter_events(response):
            return event
    raise AssertionError("the stream ended before its first event")


async def queries_since(db_url: URL, since: float, exclude_pids: set[int]) -> list:
    """Statements started on the test database after `since` (epoch secs).

    The hub's own health check (`SELECT 1` on its listening connection) is
    left out: it runs once every ten seconds whatever the streams do.
    """
    conn = await asyncpg.connect(database.asyncpg_dsn(db_url))
    try:
        return await conn.fetch(
            """
            SELECT pid, state, query FROM pg_stat_activity
            WHERE datname = current_database()
              AND pid <> pg_backend_pid() AND NOT (pid = ANY($2::int[]))
              AND backend_type = 'client backend'
              AND query_start > to_timestamp($1)
              AND query <> 'SELECT 1'
            """,
            since,
            list(exclude_pids),
        )
    finally:
        await conn.close()


async def test_twenty_clients_that_leave_after_one_event_leave_nothing_behind(
    services: ServiceFactory, db_url: URL
) -> None:
    svc = await services.start(run_worker=False, keepalive_secs=1)
    hub = svc.runtime.hub
    assert hub is not None and svc.runtime.engine is not None
    job = await svc.create("http://127.0.0.1:9/never")
    sessions = [aiohttp.ClientSession() for _ in range(20)]
    svc.extra_sessions.extend(sessions)
    responses = [
        await session.get(stream_url(svc, job["id"]), headers=svc.auth)
        for session in sessions
    ]
    events = [await first_event(response) for response in responses]
    assert {event.data["status"] for event in events} == {"pending"}
    assert hub.subscription_count == 20
    assert len(stream_tasks()) >= 20

    # While they wait, the streams hold no pooled connection and send
    # nothing to the database, keep-alives included (one a second here).
    quiet_from = time.time()
    await asyncio.sleep(2.5)
    assert svc.runtime.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await queries_since(db_url, quiet_from, set()) == []

    for response in responses:
        response.close()

    async def all_gone() -> bool:
        return hub.subscription_count == 0 and not stream_tasks()

    await eventually(all_gone, timeout=5)
    quiet_from = time.time()
    await asyncio.sleep(2.5)
    assert await queries_since(db_url, quiet_from, set()) == []


async def test_a_pending_job_stream_outlives_a_ten_second_read_timeout(
    services: ServiceFactory,
) -> None:
    svc = await services.start(run_worker=False)
    job = await svc.create("http://127.0.0.1:9/never")
    timeout = aiohttp.ClientTimeout(total=None, sock_read=10)
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(stream_url(svc, job["id"]), headers=svc.auth) as r:
            assert r.status == 200
            # Read for longer than the client's read timeout, with no change.
            async for raw in r.content:
                lines.append((time.monotonic() - started, raw.decode().strip()))
                if time.monotonic() - started > 12:
                    break
            # Then a change still arrives on the same stream, which ends.
            cancel = f"{svc.base_url}/notify/{job['id']}/cancel"
            async with svc.session.post(cancel, headers=svc.auth) as answer:
                assert answer.status == 200
            tail = [event async for event in iter_events(r)]

    first_at, first = next((at, line) for at, line in lines if line)
    assert first.startswith("id: 1") and first_at < 2
    data = json.loads(next(line for _, line in lines if line.startswith("data:"))[5:])
    assert data["status"] == "pending"
    keepalives = [at for at, line in lines if line.startswith(":")]
    assert len(keepalives) >= 2
    assert [event.data["status"] for event in tail] == ["cancelled"]


async def test_a_finished_job_sends_its_final_event_once_then_204(
    services: ServiceFactory, target: TargetServer
) -> None:
    svc = await services.start()
    job = await svc.create(target.url("/slow/0.3"))
    url = stream_url(svc, job["id"])

    # An auto-reconnecting client, as EventSource behaves: reconnect with
    # Last-Event-ID after each end, until the server answers 204.
    answers: list[int] = []
    received: list[SseEvent] = []
    headers = dict(svc.auth)
    for _ in range(5):
        status, events = await read_events(svc.session, url, headers)
        answers.append(status)
        received.extend(events)
        if status == 204:
            break
        headers["Last-Event-ID"] = events[-1].id or ""

    statuses = [event.data["status"] for event in received]
    assert statuses[-1] == "success" and statuses.count("success") == 1
    assert answers == [200, 204]

    # A client that connects after the end gets the final event, then 204.
    status, events = await read_events(svc.session, url, svc.auth)
    assert (status, [event.data["status"] for event in events]) == (200, ["success"])
    last = {**svc.auth, "Last-Event-ID": events[-1].id or ""}
    assert (await read_events(svc.session, url, last))[0] == 204
    stale = {**svc.auth, "Last-Event-ID": "1"}
    status, events = await read_events(svc.session, url, stale)
    assert (status, [event.data["status"] for event in events]) == (200, ["success"])


async def test_a_change_made_by_a_separate_worker_process_reaches_the_stream(
    services: ServiceFactory, target: TargetServer, db_url: URL, tmp_path: Path
) -> None:
    svc = await services.start(run_worker=False)
    job = await svc.create(target.url("/ok"))
    async with svc.session.get(stream_url(svc, job["id"]), headers=svc.auth) as r:
        assert (await first_event(r)).data["status"] == "pending"
        worker = spawn(["worker"], db_url, tmp_path / "worker")
        try:
            async with asyncio.timeout(30):
                rest = [event.data["status"] async for event in iter_events(r)]
        finally:
            worker.terminate()
    assert rest == ["running", "success"]
    assert target.job_ids() == [job["id"]]


async def test_events_come_in_order_with_increasing_ids(
    services: ServiceFactory, target: TargetServer
) -> None:
    web = await services.start(run_worker=False)
    job = await web.create(target.url("/status/500"))
    async with web.session.get(stream_url(web, job["id"]), headers=web.auth) as r:
        events = [await first_event(r)]
        # The worker runs in another runtime: its changes reach this web
        # process through PostgreSQL, not through memory.
        await services.start()
        async with asyncio.timeout(20):
            events += [event async for event in iter_events(r)]

    statuses = [event.data["status"] for event in events]
    assert statuses == ["pending", "running", "failed"]
    ids = [int(event.id or 0) for event in events]
    assert ids == sorted(set(ids))
    assert [event.data["version"] for event in events] == ids
    assert "500" in (events[-1].data["error_message"] or "")


async def test_an_error_message_with_quotes_backslashes_and_html_streams_intact(
    services: ServiceFactory, engine
) -> None:
    svc = await services.start(run_worker=False)
    job = await svc.create("http://127.0.0.1:9/never")
    message = 'C:\\temp\\"x" failed\n<b>bold</b> \\u0000 ünïcode'
    worker_id = uuid.uuid4()
    async with svc.session.get(stream_url(svc, job["id"]), headers=svc.auth) as r:
        assert (await first_event(r)).data["status"] == "pending"
        async with engine.begin() as conn:
            await service.register_worker(conn, worker_id, "test", os.getpid(), None)
            await service.claim_jobs(conn, worker_id, 1)
        async with engine.begin() as conn:
            await service.mark_failed(conn, uuid.UUID(job["id"]), worker_id, message)
        async with asyncio.timeout(10):
            rest = [event async for event in iter_events(r)]
    assert [event.data["status"] for event in rest] == ["running", "failed"]
    assert rest[-1].data["error_message"] == message


async def test_the_stream_is_never_compressed_even_under_gzip_middleware(
    services: ServiceFactory,
) -> None:
    def add_gzip(app) -> None:
        app.add_middleware(GZipMiddleware, minimum_size=1)

    svc = await services.start(run_worker=False, configure=add_gzip)
    job = await svc.create("http://127.0.0.1:9/never")
    headers = {**svc.auth, "Accept-Encoding": "gzip"}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(f"{svc.base_url}/notify", headers=headers) as r:
            # The middleware is really there: an ordinary answer is gzipped.
            assert r.headers.get("Content-Encoding") == "gzip"
        async with session.get(stream_url(svc, job["id"]), headers=headers) as r:
            assert r.headers.get("Content-Encoding") != "gzip"
            assert r.headers["Content-Type"].startswith("text/event-stream")
            assert r.headers["Cache-Control"] == "no-cache"
            assert r.headers["X-Accel-Buffering"] == "no"
            # The first event arrives while the stream stays open: nothing
            # holds it back in a compression buffer.
            event = await first_event(r)
    assert event.data["status"] == "pending"


async def test_one_list_stream_follows_several_jobs_of_its_owner_only(
    services: ServiceFactory,
) -> None:
    svc = await services.start(run_worker=False)
    jobs = [await svc.create("http://127.0.0.1:9/never") for _ in range(3)]
    _, stranger_token = await svc.new_owner("stranger")
    async with svc.session.post(
        f"{svc.base_url}/notify",
        json={"target_url": "http://127.0.0.1:9/x", "payload": {}},
        headers={"Authorization": f"Bearer {stranger_token}"},
    ) as response:
        foreign = (await response.json())["id"]
    # Another owner's job among them: 404, as on every route.
    query = "&".join(f"job={job_id}" for job_id in [*(j["id"] for j in jobs), foreign])
    status, _ = await read_events(
        svc.session, f"{svc.base_url}/notify/stream?{query}", svc.auth
    )
    assert status == 404

    query = "&".join(f"job={j['id']}" for j in jobs)
    url = f"{svc.base_url}/notify/stream?{query}"
    seen: list[dict] = []
    async with svc.session.get(url, headers=svc.auth) as response:
        assert response.status == 200
        async with asyncio.timeout(15):
            async for event in iter_events(response):
                seen.append(event.data)
                if len(seen) == 3:
                    assert svc.runtime.hub.subscription_count == 1  # type: ignore[union-attr]
                    for job in jobs:
                        cancel = f"{svc.base_url}/notify/{job['id']}/cancel"
                        async with svc.session.post(cancel, headers=svc.auth):
                            pass
    ids = {job["id"] for job in jobs}
    assert {data["id"] for data in seen} == ids
    assert (
        sorted(data["status"] for data in seen) == ["cancelled"] * 3 + ["pending"] * 3
    )
    status, _ = await read_events(svc.session, url, svc.auth)
    assert status == 204


async def test_a_stream_that_falls_behind_reloads_the_row_instead_of_growing(
    services: ServiceFactory, engine
) -> None:
    svc = await services.start(run_worker=False)
    hub = svc.runtime.hub
    assert hub is not None
    job = await svc.create("http://127.0.0.1:9/never")
    job_id = uuid.UUID(job["id"])
    async with svc.session.get(stream_url(svc, job["id"]), headers=svc.auth) as r:
        assert (await first_event(r)).data["status"] == "pending"
        # A change whose notification is lost, as when the listening
        # connection drops: the trigger is off for this one transaction.
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "ALTER TABLE notify_jobs DISABLE TRIGGER notify_jobs_publish_update"
            )
            await service.cancel_job(conn, job_id, svc.user_id)
            await conn.exec_driver_sql(
                "ALTER TABLE notify_jobs ENABLE TRIGGER notify_jobs_publish_update"
            )
        (subscription,) = hub._subscriptions[job_id]
        # A burst larger than the queue, pushed without yielding to the
        # stream: made-up events it must never see, only the reloaded row.
        made_up = StatusEvent(
            job_id=job_id,
            owner_id=svc.user_id,
            status=JobStatus.RUNNING,
            version=100,
            error_message=None,
            attempts=1,
            max_attempts=1,
            run_at=None,
            worker_id=None,
        )
        for version in range(100, 140):
            subscription.push(dataclasses.replace(made_up, version=version))
            assert subscription._queue.qsize() <= 16
        async with asyncio.timeout(10):
            rest = [event async for event in iter_events(r)]
    assert [(event.data["status"], event.id) for event in rest] == [("cancelled", "2")]


async def test_a_revoke_ends_the_owner_s_open_streams(
    services: ServiceFactory, target: TargetServer
) -> None:
    svc = await services.start()
    job = await svc.create(target.url("/slow/30"))
    url = f"{svc.base_url}/notify/{job['id']}/stream"

    async def read_until_closed() -> list:
        async with svc.session.get(url, headers=svc.auth) as response:
            return [event async for event in iter_events(response)]

    reader = asyncio.create_task(read_until_closed())
    await eventually(lambda: _subscribed(svc, 1))
    assert svc.runtime.engine is not None
    async with svc.runtime.engine.begin() as conn:
        await service.revoke_tokens(conn, svc.user_id)

    # The stream ends long before the job would, and cannot be reopened.
    events = await asyncio.wait_for(reader, 10)
    assert [event.data["status"] for event in events][-1] in {"pending", "running"}
    async with svc.session.get(url, headers=svc.auth) as response:
        assert response.status == 401


async def _subscribed(svc, count: int) -> bool:
    return svc.runtime.hub.subscription_count >= count
