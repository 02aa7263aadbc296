"""A local endpoint that prints every notification it receives.

`notify-worker echo` gives a newcomer a target to try the service with, and
an operator a way to see exactly what a delivery carries: the headers that
matter and the body as received.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from aiohttp import web

MAX_DELAY_SECS = 120.0

SHOWN_HEADERS = (
    "content-type",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "user-agent",
)


async def _receive(request: web.Request) -> web.Response:
    body = await request.read()
    moment = datetime.now(UTC).strftime("%H:%M:%S")
    lines = [f"{moment} {request.method} {request.path_qs} ({len(body)} bytes)"]
    for name in SHOWN_HEADERS:
        if name in request.headers:
            lines.append(f"  {name}: {request.headers[name]}")
    lines.append("  " + body.decode("utf-8", errors="replace"))
    print("\n".join(lines), flush=True)
    asked = request.query.get("status", "200")
    status = int(asked) if asked.isdigit() and 200 <= int(asked) <= 599 else 200
    delay = request.query.get("delay", "0")
    if delay.replace(".", "", 1).isdigit():
        await asyncio.sleep(min(float(delay), MAX_DELAY_SECS))
    return web.Response(status=status, text="received\n")


async def serve(host: str, port: int) -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", _receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(
        f"echo target on http://{host}:{port}/ (any path; ?status=503 answers 503, ?delay=5 answers after 5 s)",
        file=sys.stderr,
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
