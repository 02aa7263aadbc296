"""The parts a process runs, started and stopped in order.

A web process, a worker process and a host application all hold one
Runtime: the engine, the event hub, the HTTP client for deliveries and,
unless it is a web process alone, a worker. They start in that order and
stop in the reverse one: the worker hands its jobs back while the engine
and the hub (which carries cancels) are still there.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from . import database
from .config import Settings, load_settings
from .delivery import Deliverer, NameLookup, system_lookup
from .events import EventHub
from .metrics import Metrics
from .worker import Worker

logger = logging.getLogger(__name__)


class Runtime:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        run_worker: bool = True,
        lookup: NameLookup = system_lookup,
    ) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.run_worker = run_worker
        # How target names become addresses, at creation and at send time;
        # tests put a fixed table here so that no test ever asks real DNS.
        self.lookup = lookup
        self.engine: AsyncEngine | None = None
        # The same pool, for work that is one statement: no BEGIN, no COMMIT.
        self.autocommit_engine: AsyncEngine | None = None
        self.hub: EventHub | None = None
        self.deliverer: Deliverer | None = None
        self.worker: Worker | None = None
        self.metrics = Metrics()
        self.secret_key = ""
        self._stopped = False

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            # Whatever started (the listener, the client) must not outlive
            # a start-up that failed.
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self.settings
        url = database.database_url(settings)
        self.engine = database.create_engine(
            url, pool_size=max(5, min(settings.max_concurrent, 20))
        )
        await database.check_schema(self.engine)
        self.autocommit_engine = self.engine.execution_options(
            isolation_level="AUTOCOMMIT"
        )
        self.secret_key = settings.secret_key or _stored_secret(settings.data_dir)
        self.hub = EventHub(database.asyncpg_dsn(url))
        await self.hub.start()
        if self.run_worker:
            self.deliverer = Deliverer(
                timeout_secs=settings.timeout_secs,
                allowed_networks=settings.allowed_networks,
                excerpt_bytes=settings.response_excerpt_bytes,
                max_connections=settings.max_concurrent * 2,
                lookup=self.lookup,
            )
            await self.deliverer.start()
            self.worker = Worker(
                self.engine, self.hub, self.deliverer, settings, self.metrics
            )
            await self.worker.start()
        self.metrics.bind(self.engine, self.hub, self.worker)

    def begin_shutdown(self) -> None:
        """The first signal: stop claiming, end open streams, start the grace.

        `stop()` (from the lifespan or the command) then waits for the rest.
        """
        if self.hub is not None:
            self.hub.end_streams()
        if self.worker is not None:
            self.worker.begin_stop()

    def force_shutdown(self) -> None:
        """The second signal: abort the attempts still running and hand them back."""
        self.begin_shutdown()
        if self.worker is not None:
            self.worker.abandon_grace()

    async def stop(self) -> None:
        """Stop everything that started; calling it again does nothing."""
        if self._stopped:
            return
        self._stopped = True
        if self.worker is not None:
            await self.worker.stop()
        if self.deliverer is not None:
            await self.deliverer.close()
        if self.hub is not None:
            await self.hub.close()
        if self.engine is not None:
            await self.engine.dispose()

    def wake(self, job_id: Any = None) -> None:
        """Tell this process's worker, if any, that a job may be waiting."""
        if self.worker is not None:
            self.worker.wake(job_id)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """For a host application's lifespan: start everything, then stop it."""
        if app is not None:
            app.state.notify_runtime = self
        await self.start()
        try:
            yield
        finally:
            await self.stop()


def _stored_secret(data_dir: Path) -> str:
    """The cookie-signing key, generated once and kept in the data directory."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # O_EXCL: when two processes start at once, one writes and both read it.
    with contextlib.suppress(FileExistsError):
        fd = path.open("x", encoding="ascii")
        with fd:
            fd.write(key)
        path.chmod(0o600)
    return path.read_text().strip()
