"""Fixtures for the operations tests: a target that answers from a script."""

from collections.abc import AsyncIterator

import pytest

from .scripted_target import ScriptedTarget


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedTarget]:
    server = ScriptedTarget()
    await server.start()
    yield server
    await server.stop()
