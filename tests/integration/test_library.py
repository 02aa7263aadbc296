"""A host application mounts the routes and starts the worker from its lifespan."""

import asyncio
import socket

import aiohttp
import uvicorn
from fastapi import FastAPI
from sqlalchemy import URL

from notify_worker import Runtime, install, load_settings, service

from ..helpers import TargetServer, eventually


async def test_a_host_application_delivers_through_its_own_lifespan(
    db_url: URL, target: TargetServer, tmp_path
) -> None:
    settings = load_settings(
        database_url=db_url.render_as_string(hide_password=False),
        data_dir=tmp_path,
        allowed_networks="127.0.0.0/8",
    )
    runtime = Runtime(settings)
    app = FastAPI(lifespan=runtime.lifespan)
    install(app)

    @app.get("/host")
    async def host_route() -> dict[str, str]:
        return {"host": "still mine"}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_config=None))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: _started(server))
        async with runtime.engine.begin() as conn:
            _user, token = await service.create_user(conn, "host-owner")
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.get(f"{base}/host") as response:
                assert await response.json() == {"host": "still mine"}
            async with http.post(
                f"{base}/notify",
                json={"target_url": target.url("/ok"), "payload": {"from": "host"}},
            ) as response:
                assert response.status == 201
                job_id = (await response.json())["id"]

            async def delivered() -> bool:
                async with http.get(f"{base}/notify/{job_id}") as response:
                    return (await response.json())["status"] == "success"

            await eventually(delivered)
        assert target.bodies() == [b'{"from":"host"}']
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def _started(server: uvicorn.Server) -> bool:
    return server.started
