"""Test helpers: a local HTTP target, a live service, an SSE reader."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from aiohttp import web
from sqlalchemy import URL

from notify_worker import Runtime, create_app, load_settings, service

TERMINAL = {"success", "failed", "cancelled"}


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 20.0, every: float = 0.05
) -> Any:
    """Poll `check` until it returns a truthy value; fail at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"condition not met within {timeout}s (last: {value!r})"
            )
        await asyncio.sleep(every)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    path: str
    body: bytes
    headers: dict[str, str]
    at: float


class TargetServer:
    """A real HTTP server on loopback whose answers the test chooses.

    Paths: /ok, /status/<code>, /slow/<seconds> (then 200), /hang (never
    answers). Every request that reaches a handler is recorded.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.arrived = asyncio.Event()
        self.cancelled_requests = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.add_routes(app)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def add_routes(self, app: web.Application) -> None:
        """The paths this target answers; a subclass may add its own."""
        app.router.add_post("/ok", self._ok)
        app.router.add_post("/status/{code}", self._status)
        app.router.add_post("/slow/{seconds}", self._slow)
        app.router.add_post("/hang", self._hang)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self) -> list[bytes]:
        return [request.body for request in self.received]

    def job_ids(self) -> list[str]:
        return [request.headers.get("webhook-id", "") for request in self.received]

    async def _record(self, request: web.Request) -> None:
        body = await request.read()
        self.received.append(
            Received(request.path, body, dict(request.headers), time.monotonic())
        )
        self.arrived.set()

    async def _ok(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text="ok")

    async def _status(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=int(request.match_info["code"]), text="answer")

    async def _slow(self, request: web.Request) -> web.Response:
        await self._record(request)
        try:
            await asyncio.sleep(float(request.match_info["seconds"]))
        except asyncio.CancelledError:
            self.cancelled_requests += 1
            raise
        return web.Response(text="late ok")

    async def _hang(self, request: web.Request) -> web.Response:
        await self._record(request)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled_requests += 1
            raise
        return web.Response(text="never")


@dataclass
class RunningService:
    base_url: str
    runtime: Runtime
    token: str
    user_id: int
    server: uvicorn.Server
    task: asyncio.Task[None]
    session: aiohttp.ClientSession
    extra_sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def create(self, target_url: str, payload: Any = None, **extra: Any) -> dict:
        body = {
            "target_url": target_url,
            "payload": payload or {"hello": "world"},
            **extra,
        }
        async with self.session.post(
            f"{self.base_url}/notify", json=body, headers=self.auth
        ) as response:
            assert response.status == 201, await response.text()
            return await response.json()

    async def job(self, job_id: str, token: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        async with self.session.get(
            f"{self.base_url}/notify/{job_id}", headers=headers
        ) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def wait_status(
        self, job_id: str, statuses: set[str] = TERMINAL, timeout: float = 20.0
    ) -> dict:
        async def check() -> dict | None:
            job = await self.job(job_id)
            return job if job["status"] in statuses else None

        return await eventually(check, timeout=timeout)

    async def new_owner(self, name: str) -> tuple[int, str]:
        assert self.runtime.engine is not None
        async with self.runtime.engine.begin() as conn:
            user, token = await service.create_user(conn, name)
        return user.id, token


class ServiceFactory:
    """Starts the real ASGI app under uvicorn on a loopback port."""

    def __init__(self, db_url: URL, data_dir: Path) -> None:
        self.db_url = db_url
        self.data_dir = data_dir
        self.running: list[RunningService] = []

    def settings(self, **overrides: Any) -> Any:
        values: dict[str, Any] = {
            "database_url": self.db_url.render_as_string(hide_password=False),
            "data_dir": self.data_dir,
            "allowed_networks": "127.0.0.0/8",
            "timeout_secs": 5,
            "poll_interval_secs": 0.5,
            "heartbeat_secs": 0.5,
            "shutdown_grace_secs": 2,
            **overrides,
        }
        return load_settings(**values)

    async def start(
        self,
        *,
        run_worker: bool = True,
        lookup: Any = None,
        configure: Callable[[Any], None] | None = None,
        **overrides: Any,
    ) -> RunningService:
        """`configure` gets the app before it serves (to add a middleware)."""
        options = {} if lookup is None else {"lookup": lookup}
        runtime = Runtime(self.settings(**overrides), run_worker=run_worker, **options)
        app = create_app(runtime)
        if configure is not None:
            configure(app)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, lifespan="on")
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve(sockets=[sock]))
        await eventually(lambda: _started(server, task), timeout=30)
        assert runtime.engine is not None
        async with runtime.engine.begin() as conn:
            user, token = await service.create_user(
                conn, f"owner-{uuid.uuid4().hex[:8]}"
            )
        running = RunningService(
            base_url=f"http://127.0.0.1:{port}",
            runtime=runtime,
            token=token,
            user_id=user.id,
            server=server,
            task=task,
            session=aiohttp.ClientSession(),
        )
        self.running.append(running)
        return running

    async def stop(self, running: RunningService) -> None:
        running.server.should_exit = True
        await asyncio.wait_for(running.task, 30)
        await running.session.close()
        for session in running.extra_sessions:
            await session.close()
        self.running.remove(running)

    async def stop_all(self) -> None:
        for running in list(self.running):
            await self.stop(running)


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()
        raise AssertionError("the service exited during start-up")
    return server.started


@dataclass
class SseEvent:
    id: str | None
    data: dict[str, Any]


async def read_events(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    *,
    limit: int = 100,
    timeout: float = 20.0,
) -> tuple[int, list[SseEvent]]:
    """Read a stream until the server ends it (or `limit` events)."""
    events: list[SseEvent] = []
    async with asyncio.timeout(timeout):
        async with session.get(url, headers=headers) as response:
            if response.status != 200:
                return response.status, events
            async for event in iter_events(response):
                events.append(event)
                if len(events) >= limit:
                    break
            return response.status, events


async def iter_events(response: aiohttp.ClientResponse):  # type: ignore[no-untyped-def]
    event_id: str | None = None
    data: list[str] = []
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line == "":
            if data:
                yield SseEvent(event_id, json.loads("\n".join(data)))
            event_id, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


@dataclass
class ServiceProcess:
    """`python -m notify_worker ...` as a real child process."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def spawn(
    command: list[str], db_url: URL, data_dir: Path, **env: str
) -> ServiceProcess:
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": db_url.set(drivername="postgresql").render_as_string(
            hide_password=False
        ),
        "NOTIFY_DATA_DIR": str(data_dir),
        "NOTIFY_PORT": str(port),
        "NOTIFY_ALLOWED_NETWORKS": "127.0.0.0/8",
        "NOTIFY_POLL_INTERVAL_SECS": "0.5",
        "NOTIFY_HEARTBEAT_SECS": "0.5",
        **env,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"{command[0]}-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "notify_worker", *command],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ServiceProcess(process, f"http://127.0.0.1:{port}", log_path)


async def wait_healthy(proc: ServiceProcess, timeout: float = 30) -> None:
    async with aiohttp.ClientSession() as session:

        async def check() -> bool:
            if proc.process.poll() is not None:
                raise AssertionError(f"the service exited:\n{proc.log()}")
            try:
                async with session.get(f"{proc.base_url}/healthz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(check, timeout=timeout, every=0.1)
