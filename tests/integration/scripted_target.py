"""A local target whose answers a test scripts, one per request."""

from __future__ import annotations

import time
from collections import defaultdict, deque

from aiohttp import web


class ScriptedTarget:
    """POST /<name> answers the next scripted (status, headers, body) for that name.

    When a name's script runs out, its last answer repeats. Every request is
    recorded with the time it arrived.
    """

    def __init__(self) -> None:
        self._scripts: dict[str, deque[tuple[int, dict[str, str], bytes]]] = {}
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def script(
        self,
        name: str,
        *answers: int | tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes],
    ) -> str:
        queue = deque()
        for answer in answers:
            if isinstance(answer, int):
                answer = (answer, {})
            status, headers, *body = answer
            queue.append((status, headers, body[0] if body else b"answer"))
        self._scripts[name] = queue
        return f"http://127.0.0.1:{self.port}/{name}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.Response:
        await request.read()
        name = request.match_info["name"]
        self.arrivals[name].append(time.monotonic())
        queue = self._scripts[name]
        status, headers, body = queue[0] if len(queue) == 1 else queue.popleft()
        return web.Response(status=status, headers=headers, body=body)
