"""Against a real `serve` process: `send --follow`, and JSON log lines."""

import json
from pathlib import Path

import aiohttp
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from notify_worker import service

from ..helpers import TargetServer, eventually, spawn, wait_healthy
from .ops_helpers import run_command


async def new_token(engine: AsyncEngine) -> str:
    async with engine.begin() as conn:
        _user, token = await service.create_user(conn, "sender")
    return token


async def test_send_follow_exits_0_on_success_and_1_on_failure(
    engine: AsyncEngine, db_url: URL, tmp_path: Path, target: TargetServer
) -> None:
    token = await new_token(engine)
    # Each job stays running or pending long enough for `send` to see it live.
    proc = spawn(["serve"], db_url, tmp_path / "serve", NOTIFY_RETRY_SCHEDULE="2s")
    client = {"NOTIFY_URL": proc.base_url, "NOTIFY_TOKEN": token}
    try:
        await wait_healthy(proc)

        ok = await run_command(
            ["send", target.url("/slow/2"), '{"via": "cli"}', "--follow"],
            None,
            tmp_path,
            **client,
        )
        failed = await run_command(
            [
                "send",
                target.url("/status/500"),
                "{}",
                "--follow",
                "--max-attempts",
                "2",
            ],
            None,
            tmp_path,
            **client,
        )
        refused = await run_command(
            ["send", target.url("/ok"), "{}", "--token", "nw_wrong"],
            None,
            tmp_path,
            NOTIFY_URL=proc.base_url,
        )
    finally:
        proc.terminate()

    assert ok.code == 0, ok.err
    lines = ok.out.splitlines()
    job_id = lines[0].split()[1]
    assert lines[0] == f"job {job_id} created"
    assert lines[-1] == f"job {job_id} success after 1 attempt(s)"
    assert any(line.startswith("running") for line in lines[1:-1])
    assert target.bodies()[0] == b'{"via":"cli"}'

    assert failed.code == 1, failed.err
    lines = failed.out.splitlines()
    assert lines[-1].endswith(
        "failed after 2 attempt(s): HTTP 500 Internal Server Error"
    )
    waiting = [line for line in lines if line.startswith("pending   attempt 1/2")]
    assert waiting and "next at" in waiting[0]

    assert refused.code == 2
    assert "401" in refused.err


async def test_json_log_format_prints_one_object_a_line(
    engine: AsyncEngine, db_url: URL, tmp_path: Path, target: TargetServer
) -> None:
    token = await new_token(engine)
    proc = spawn(["serve"], db_url, tmp_path / "serve", NOTIFY_LOG_FORMAT="json")
    try:
        await wait_healthy(proc)
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"}
        ) as http:
            async with http.post(
                f"{proc.base_url}/notify",
                json={"target_url": target.url("/status/201"), "payload": {}},
            ) as response:
                job = await response.json()
            await _wait_finished(http, f"{proc.base_url}/notify/{job['id']}")
    finally:
        proc.terminate()

    records = [json.loads(line) for line in proc.log().splitlines() if line.strip()]
    assert records, "the service printed nothing"
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys()
    actions = [record.get("action") for record in records]
    assert "serve_starting" in actions and "worker_started" in actions
    attempt = next(r for r in records if r.get("action") == "attempt_succeeded")
    assert attempt["job_id"] == job["id"]
    assert attempt["owner_id"] == job["owner_id"]
    assert attempt["attempt"] == 1
    assert attempt["status_code"] == 201
    assert isinstance(attempt["duration_ms"], int)
    assert attempt["level"] == "info"


async def _wait_finished(http: aiohttp.ClientSession, url: str) -> None:
    async def finished() -> bool:
        async with http.get(url) as response:
            return (await response.json())["status"] == "success"

    await eventually(finished)
