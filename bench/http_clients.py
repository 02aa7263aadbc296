"""Local POSTs per second: a shared aiohttp session against httpx.

Delivery is the hot path, so the client was chosen by this measurement: the
same small JSON body POSTed to a local aiohttp target at concurrency 16,
through a shared aiohttp.ClientSession, a shared httpx.AsyncClient, and a
new httpx.AsyncClient per request (the tutorial's pattern).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

CONCURRENCY = 16
BODY = b'{"event": "push", "n": 1}'


async def _target() -> tuple[web.AppRunner, str]:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/hook"


async def _rate(post: Callable[[], Awaitable[None]], seconds: float) -> float:
    count = 0
    deadline = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal count
        while time.monotonic() < deadline:
            await post()
            count += 1

    started = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))
    return count / (time.monotonic() - started)


async def run(seconds: float = 3.0) -> list[tuple[str, float]]:
    import httpx

    runner, url = await _target()
    headers = {"Content-Type": "application/json"}
    results = []
    try:
        async with aiohttp.ClientSession() as session:

            async def aiohttp_shared() -> None:
                async with session.post(url, data=BODY, headers=headers) as response:
                    await response.read()

            results.append(
                ("aiohttp, shared ClientSession", await _rate(aiohttp_shared, seconds))
            )

        async with httpx.AsyncClient() as client:

            async def httpx_shared() -> None:
                await client.post(url, content=BODY, headers=headers)

            results.append(
                ("httpx, shared AsyncClient", await _rate(httpx_shared, seconds))
            )

        async def httpx_per_request() -> None:
            async with httpx.AsyncClient() as fresh:
                await fresh.post(url, content=BODY, headers=headers)

        results.append(
            (
                "httpx, new AsyncClient per request",
                await _rate(httpx_per_request, seconds),
            )
        )
    finally:
        await runner.cleanup()
    return results


def report(results: list[tuple[str, float]]) -> str:
    best = results[0][1]
    lines = [
        f"POSTs/s to a local target, concurrency {CONCURRENCY}",
        "",
        "| client | POSTs/s | vs aiohttp |",
        "| --- | ---: | ---: |",
    ]
    for name, rate in results:
        lines.append(f"| {name} | {rate:,.0f} | {rate / best:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(asyncio.run(run())))
