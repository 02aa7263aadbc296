from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from .hostile import Handler, RawTarget


@pytest.fixture
async def raw_target() -> AsyncIterator[Callable[..., object]]:
    """Start raw TCP targets; every one is stopped after the test."""
    started: list[RawTarget] = []

    async def start(handler: Handler, host: str = "127.0.0.1") -> RawTarget:
        server = await RawTarget(handler, host).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()
