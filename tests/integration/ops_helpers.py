"""Helpers for the operations tests: commands as real processes, table counts."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy import URL

from notify_worker import database


@dataclass
class Finished:
    code: int
    out: str
    err: str


async def run_command(
    args: list[str], db_url: URL | None, data_dir: Path, timeout: float = 60, **env: str
) -> Finished:
    environment = {**os.environ, "NOTIFY_DATA_DIR": str(data_dir), **env}
    if db_url is not None:
        environment["DATABASE_URL"] = db_url.set(
            drivername="postgresql"
        ).render_as_string(hide_password=False)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notify_worker",
        *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(), err.decode())


async def count_jobs(db_url: URL) -> int:
    conn = await asyncpg.connect(database.asyncpg_dsn(db_url))
    try:
        return await conn.fetchval("SELECT count(*) FROM notify_jobs")
    finally:
        await conn.close()
