"""Enqueue and delivery throughput: notify-worker against Procrastinate.

Both run on the same PostgreSQL (a database of their own each run), at the
same concurrency, POSTing to the same local target running in another
process. For each: N jobs are enqueued one transaction at a time (as an API
would), then a worker drains them; the drain time runs from the worker's
start to the target's N-th request.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from sqlalchemy import URL, make_url

from notify_worker import Runtime, database, load_settings, service

CONCURRENCY = 16


def _serve_target(port_queue: Any) -> None:
    count = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        count += 1
        return web.Response(text="ok")

    async def counted(_request: web.Request) -> web.Response:
        return web.Response(text=str(count))

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        app.router.add_get("/count", counted)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


@asynccontextmanager
async def target() -> AsyncIterator[str]:
    ports: Any = multiprocessing.Queue()
    process = multiprocessing.Process(target=_serve_target, args=(ports,), daemon=True)
    process.start()
    try:
        yield f"http://127.0.0.1:{ports.get(timeout=10)}"
    finally:
        process.terminate()
        process.join(5)


async def _count(http: aiohttp.ClientSession, base: str) -> int:
    async with http.get(f"{base}/count") as response:
        return int(await response.text())


async def _wait_for(http: aiohttp.ClientSession, base: str, total: int) -> None:
    async with asyncio.timeout(600):
        # The count lives in the target's process: polling is the only way.
        while await _count(http, base) < total:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


@asynccontextmanager
async def scratch_database(server: URL) -> AsyncIterator[URL]:
    name = f"notify_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database.asyncpg_dsn(server))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def bench_notify_worker(
    server: URL, base: str, total: int
) -> tuple[float, float]:
    async with scratch_database(server) as url, aiohttp.ClientSession() as http:
        await database.upgrade_async(url)
        engine = database.create_engine(url)
        async with engine.begin() as conn:
            owner, _token = await service.create_user(conn, "bench")
        # As POST /notify does: one INSERT in autocommit per job.
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        started = time.monotonic()
        for n in range(total):
            async with autocommit.connect() as conn:
                await service.create_job(
                    conn, owner.id, f"{base}/hook", f'{{"n": {n}}}'
                )
        enqueue = total / (time.monotonic() - started)
        await engine.dispose()

        settings = load_settings(
            database_url=url.render_as_string(hide_password=False),
            allowed_networks="127.0.0.0/8",
            max_concurrent=CONCURRENCY,
            log_level="warning",
        )
        runtime = Runtime(settings)
        before = await _count(http, base)
        started = time.monotonic()
        await runtime.start()
        await _wait_for(http, base, before + total)
        drain = total / (time.monotonic() - started)
        await runtime.stop()
    return enqueue, drain


async def bench_procrastinate(
    server: URL, base: str, total: int
) -> tuple[float, float]:
    import procrastinate

    async with scratch_database(server) as url, aiohttp.ClientSession() as http:
        conninfo = url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=conninfo)
        )
        session: aiohttp.ClientSession | None = None

        @app.task(name="deliver")
        async def deliver(target_url: str, payload: str) -> None:
            assert session is not None
            async with session.post(
                target_url, data=payload, headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()

        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            started = time.monotonic()
            for n in range(total):
                await deliver.defer_async(
                    target_url=f"{base}/hook", payload=f'{{"n": {n}}}'
                )
            enqueue = total / (time.monotonic() - started)

            session = aiohttp.ClientSession()
            before = await _count(http, base)
            started = time.monotonic()
            worker = asyncio.create_task(
                app.run_worker_async(
                    concurrency=CONCURRENCY, wait=False, install_signal_handlers=False
                )
            )
            await _wait_for(http, base, before + total)
            drain = total / (time.monotonic() - started)
            await worker
            await session.close()
    return enqueue, drain


def _server_url() -> URL:
    given = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if given:
        return make_url(given).set(drivername="postgresql+asyncpg")
    settings = load_settings()
    return database.database_url(settings).set(database="postgres")


async def run(total: int = 2000) -> str:
    server = _server_url()
    async with target() as base:
        # Procrastinate first: whatever the machine's load does over time
        # then favours neither side (run it twice to see the spread).
        theirs = await bench_procrastinate(server, base, total)
        ours = await bench_notify_worker(server, base, total)
    lines = [
        f"{total} jobs, concurrency {CONCURRENCY}, one local target in another process",
        "",
        "| | notify-worker | Procrastinate | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| enqueue, jobs/s | {ours[0]:,.0f} | {theirs[0]:,.0f} | {ours[0] / theirs[0]:.2f}x |",
        f"| enqueue to delivered, jobs/s | {ours[1]:,.0f} | {theirs[1]:,.0f} | {ours[1] / theirs[1]:.2f}x |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(asyncio.run(run(int(os.environ.get("BENCH_JOBS", "2000")))))
