"""How many PostgreSQL connections a web and a worker process hold, idle and busy.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        python -m bench.connections

Creates a scratch database on that server, runs `serve --no-worker` and
`worker` against it, counts their connections in pg_stat_activity (by
client port, so each process is counted apart), and drops the database.
Figures only, never assertions.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import psutil
from aiohttp import web
from sqlalchemy import make_url

from notify_worker import database, service

CONCURRENCY = int(os.environ.get("NOTIFY_MAX_CONCURRENT", "16"))
JOBS = 400


async def main() -> None:
    server_url = make_url(os.environ["DATABASE_URL"]).set(
        drivername="postgresql+asyncpg"
    )
    name = f"notify_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database.asyncpg_dsn(server_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = server_url.set(database=name)
    try:
        await database.upgrade_async(url)
        await measure(url, admin, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def measure(url, admin: asyncpg.Connection, name: str) -> None:  # type: ignore[no-untyped-def]
    engine = database.create_engine(url, pool_size=1)
    async with engine.begin() as conn:
        _user, token = await service.create_user(conn, "bench")
    await engine.dispose()
    target = await _start_target()
    with tempfile.TemporaryDirectory() as data_dir:
        env = {
            **os.environ,
            "DATABASE_URL": url.set(drivername="postgresql").render_as_string(
                hide_password=False
            ),
            "NOTIFY_DATA_DIR": data_dir,
            "NOTIFY_PORT": "8791",
            "NOTIFY_ALLOWED_NETWORKS": "127.0.0.0/8",
            "NOTIFY_MAX_CONCURRENT": str(CONCURRENCY),
            "NOTIFY_LOG_LEVEL": "warning",
        }
        web_proc = _spawn(["serve", "--no-worker"], env, data_dir)
        worker_proc = _spawn(["worker"], env, data_dir)
        try:
            await _wait_healthy()
            # The worker starts in about the same time; give it a margin.
            await asyncio.sleep(2)
            print(f"NOTIFY_MAX_CONCURRENT={CONCURRENCY}")
            procs = {"web": web_proc.pid, "worker": worker_proc.pid}
            print("idle:", await _counts(admin, name, procs))
            busy = asyncio.create_task(_load(token, target))
            peak: dict[str, int] = {}
            while not busy.done():
                for key, value in (await _counts(admin, name, procs)).items():
                    peak[key] = max(peak.get(key, 0), value)
                await asyncio.sleep(0.05)
            await busy
            print(f"peak while {JOBS} jobs ran:", peak)
        finally:
            for proc in (web_proc, worker_proc):
                proc.terminate()
                proc.wait(30)


async def _counts(
    admin: asyncpg.Connection, name: str, procs: dict[str, int]
) -> dict[str, int]:
    """Connections per process and kind (the LISTEN session, pooled ones).

    pg_stat_activity knows each connection's client port; psutil knows
    which process holds that port.
    """
    rows = await admin.fetch(
        "SELECT client_port, query LIKE 'LISTEN%' AS listening "
        "FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        name,
    )
    owner = {
        conn.laddr.port: label
        for label, pid in procs.items()
        for conn in psutil.Process(pid).net_connections(kind="tcp")
        if conn.raddr
    }
    found: dict[str, int] = {}
    for row in rows:
        label = owner.get(row["client_port"], "other")
        kind = "listen" if row["listening"] else "pooled"
        found[f"{label} {kind}"] = found.get(f"{label} {kind}", 0) + 1
    return found


async def _load(token: str, target_port: int) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        ids = []
        for n in range(JOBS):
            async with http.post(
                "http://127.0.0.1:8791/notify",
                json={
                    "target_url": f"http://127.0.0.1:{target_port}/slow",
                    "payload": n,
                },
            ) as response:
                ids.append((await response.json())["id"])
        for job_id in ids:
            while True:
                async with http.get(f"http://127.0.0.1:8791/notify/{job_id}") as r:
                    if (await r.json())["status"] != "pending":
                        break
                await asyncio.sleep(0.1)


async def _wait_healthy() -> None:
    async with aiohttp.ClientSession() as http:
        for _try in range(300):
            try:
                async with http.get("http://127.0.0.1:8791/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the web process did not start")


async def _start_target() -> int:
    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(0.2)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def _spawn(command: list[str], env: dict[str, str], data_dir: str) -> subprocess.Popen:
    log = Path(data_dir) / f"{command[0]}.log"
    return subprocess.Popen(
        [sys.executable, "-m", "notify_worker", *command],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


if __name__ == "__main__":
    asyncio.run(main())
