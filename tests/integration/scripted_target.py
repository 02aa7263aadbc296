"""A local target whose answers a test scripts, one per request."""

from __future__ import annotations

import time
from collections import defaultdict, deque

from aiohttp import web

from ..helpers import TargetServer

Answer = tuple[int, dict[str, str], bytes]


class ScriptedTarget(TargetServer):
    """POST /scripted/<name> answers the next scripted answer for that name.

    An answer is a status, or (status, headers) or (status, headers, body).
    When a name's script runs out, its last answer repeats. Each request's
    arrival time is recorded by name.
    """

    def __init__(self) -> None:
        super().__init__()
        self._scripts: dict[str, deque[Answer]] = {}
        self.arrivals: dict[str, list[float]] = defaultdict(list)

    def script(self, name: str, *answers: int | tuple) -> str:
        queue: deque[Answer] = deque()
        for answer in answers:
            status, headers, *body = (answer, {}) if isinstance(answer, int) else answer
            queue.append((status, headers, body[0] if body else b"answer"))
        self._scripts[name] = queue
        return self.url(f"/scripted/{name}")

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_post("/scripted/{name}", self._scripted)

    async def _scripted(self, request: web.Request) -> web.Response:
        await request.read()
        name = request.match_info["name"]
        self.arrivals[name].append(time.monotonic())
        queue = self._scripts[name]
        status, headers, body = queue[0] if len(queue) == 1 else queue.popleft()
        return web.Response(status=status, headers=headers, body=body)
