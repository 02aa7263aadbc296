"""What the durability tests share: an API client, table reads, processes.

The tests run real `notify-worker` processes (spawn), so they look at the
outcome the way an operator would: through the HTTP API and the table.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
from sqlalchemy import URL

from notify_worker import database, service

from ..helpers import TERMINAL, ServiceProcess, eventually


async def new_owner_token(db_url: URL, name: str = "durability-owner") -> str:
    engine = database.create_engine(db_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            _user, token = await service.create_user(conn, name)
    finally:
        await engine.dispose()
    return token


class Api:
    """The JSON API of one web process, as an owner uses it."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def close(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def request(
        self, method: str, path: str, body: Any = None
    ) -> tuple[int, dict[str, Any], str]:
        """Status, JSON body and content type of one call."""
        async with self.session.request(
            method, self.base_url + path, json=body
        ) as response:
            data = await response.json(content_type=None) if response.content else {}
            return response.status, data or {}, response.content_type

    async def create(self, target_url: str, payload: Any = None) -> str:
        status, job, _type = await self.request(
            "POST", "/notify", {"target_url": target_url, "payload": payload or {}}
        )
        assert status == 201, (status, job)
        return job["id"]

    async def create_many(
        self, target_url: str, count: int, *, parallel: int = 8
    ) -> list[str]:
        """Create `count` jobs, `parallel` requests at a time, in order."""
        ids: list[str] = [""] * count
        numbers = iter(range(count))

        async def creator() -> None:
            for n in numbers:
                ids[n] = await self.create(target_url, {"n": n})

        await asyncio.gather(*(creator() for _ in range(parallel)))
        return ids

    async def cancel(self, job_id: str) -> tuple[int, dict[str, Any]]:
        status, body, _type = await self.request("POST", f"/notify/{job_id}/cancel")
        return status, body

    async def job(self, job_id: str) -> dict[str, Any]:
        status, job, _type = await self.request("GET", f"/notify/{job_id}")
        assert status == 200, (status, job)
        return job


async def connect(db_url: URL) -> asyncpg.Connection:
    return await asyncpg.connect(database.asyncpg_dsn(db_url))


async def jobs_by_id(db_url: URL, ids: Iterable[str]) -> dict[str, asyncpg.Record]:
    conn = await connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT id, status, error_message, attempts, worker_id, started_at "
            "FROM notify_jobs WHERE id = ANY($1::uuid[])",
            [uuid.UUID(job_id) for job_id in ids],
        )
    finally:
        await conn.close()
    return {str(row["id"]): row for row in rows}


async def wait_statuses(
    db_url: URL,
    ids: Iterable[str],
    statuses: set[str] = TERMINAL,
    *,
    timeout: float = 30.0,
) -> dict[str, asyncpg.Record]:
    """Wait until every one of these jobs is in one of `statuses`."""
    wanted = list(ids)

    async def check() -> dict[str, asyncpg.Record] | None:
        rows = await jobs_by_id(db_url, wanted)
        done = len(rows) == len(wanted) and all(
            row["status"] in statuses for row in rows.values()
        )
        return rows if done else None

    return await eventually(check, timeout=timeout, every=0.2)


async def worker_ids(db_url: URL) -> list[uuid.UUID]:
    conn = await connect(db_url)
    try:
        return [row["id"] for row in await conn.fetch("SELECT id FROM notify_workers")]
    finally:
        await conn.close()


async def wait_new_worker(
    db_url: URL, proc: ServiceProcess, known: Iterable[uuid.UUID] = ()
) -> uuid.UUID:
    """The id a freshly spawned worker process registered under."""
    before = set(known)

    async def check() -> uuid.UUID | None:
        if proc.process.poll() is not None:
            raise AssertionError(f"the process exited:\n{proc.log()}")
        fresh = set(await worker_ids(db_url)) - before
        return fresh.pop() if fresh else None

    return await eventually(check, timeout=30, every=0.1)


async def database_now(db_url: URL) -> datetime:
    conn = await connect(db_url)
    try:
        return await conn.fetchval("SELECT now()")
    finally:
        await conn.close()


async def wait_exit(proc: ServiceProcess, timeout: float) -> int:
    """The exit code of a process expected to stop by itself."""
    code = await eventually(lambda: _exit_code(proc), timeout=timeout, every=0.05)
    return code - 1000


async def _exit_code(proc: ServiceProcess) -> int | None:
    code = proc.process.poll()
    # Shifted so that a clean exit (0) is truthy for eventually().
    return None if code is None else code + 1000


def stop_quietly(*procs: ServiceProcess) -> None:
    """Test clean-up: SIGKILL whatever is still running."""
    for proc in procs:
        if proc.process.poll() is None:
            proc.kill()
