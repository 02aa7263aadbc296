"""The commands: serve, worker, migrate, user."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

import uvicorn

from . import database, logs, service
from .config import ConfigError, Settings, load_settings
from .runtime import Runtime

logger = logging.getLogger("notify_worker.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notify-worker",
        description="Asynchronous webhook notifications on PostgreSQL.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_cmd = commands.add_parser(
        "serve", help="run the web service with a worker inside"
    )
    serve_cmd.add_argument(
        "--no-worker",
        action="store_true",
        help="web only: leave deliveries to `notify-worker worker` processes",
    )
    commands.add_parser("worker", help="run a worker process alone (for scale-out)")

    migrate = commands.add_parser("migrate", help="upgrade or downgrade the schema")
    steps = migrate.add_subparsers(dest="direction", required=True, metavar="DIRECTION")
    up = steps.add_parser("upgrade", help="apply migrations (to head by default)")
    up.add_argument("revision", nargs="?", default="head")
    down = steps.add_parser("downgrade", help="revert migrations (one by default)")
    down.add_argument("revision", nargs="?", default="-1")

    user = commands.add_parser("user", help="manage owners and their tokens")
    actions = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create an owner; prints its token")
    create.add_argument("name")
    token = actions.add_parser("token", help="issue another token for an owner")
    token.add_argument("name")
    revoke = actions.add_parser("revoke", help="revoke every token of an owner")
    revoke.add_argument("name")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"notify-worker: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        if args.command == "serve":
            return serve(settings, run_worker=not args.no_worker)
        if args.command == "worker":
            return asyncio.run(run_worker(settings))
        if args.command == "migrate":
            return migrate(settings, args.direction, args.revision)
        return asyncio.run(manage_user(settings, args.action, args.name))
    except (ConfigError, database.SchemaOutOfDate) as exc:
        print(f"notify-worker: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"notify-worker: cannot reach the database: {exc}", file=sys.stderr)
        return 1


def migrate(settings: Settings, direction: str, revision: str) -> int:
    url = database.database_url(settings)
    if direction == "upgrade":
        database.upgrade(url, revision)
    else:
        database.downgrade(url, revision)
    print(
        f"database {direction} to {revision}: done (now at {database.head_revision() if revision == 'head' else revision})"
    )
    return 0


async def manage_user(settings: Settings, action: str, name: str) -> int:
    engine = database.create_engine(database.database_url(settings), pool_size=1)
    try:
        await database.check_schema(engine)
        async with engine.begin() as conn:
            if action == "create":
                if await service.find_user(conn, name) is not None:
                    print(
                        f"notify-worker: user {name!r} already exists", file=sys.stderr
                    )
                    return 1
                user, token = await service.create_user(conn, name)
                print(
                    f"created user {user.name} (id {user.id}); its API token, shown once:"
                )
                print(token)
                return 0
            user = await service.find_user(conn, name)
            if user is None:
                print(f"notify-worker: no user {name!r}", file=sys.stderr)
                return 1
            if action == "token":
                token = await service.create_token(conn, user.id)
                print(f"new API token for {user.name}, shown once:")
                print(token)
                return 0
            count = await service.revoke_tokens(conn, user.id)
            print(f"revoked {count} token(s) of {user.name}")
            return 0
    finally:
        await engine.dispose()


def serve(settings: Settings, *, run_worker: bool = True) -> int:
    from .web.app import create_app

    asyncio.run(_preflight(settings))
    runtime = Runtime(settings, run_worker=run_worker)
    config = uvicorn.Config(
        create_app(runtime),
        host=settings.host,
        port=settings.port,
        log_config=None,
        lifespan="on",
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_secs) + 5),
    )
    server = _Server(config, runtime)
    print(
        f"notify-worker serving on http://{settings.host}:{settings.port}", flush=True
    )
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(server.serve_then_stop())
    return 0 if server.started else 1


class _Server(uvicorn.Server):
    """uvicorn's server, with the worker's two-stage shutdown on signals.

    uvicorn alone would stop the worker only from the lifespan, after every
    open connection closed, and its forced exit skips the lifespan: jobs in
    flight would stay running. Here the first SIGTERM/SIGINT stops claiming
    and ends the streams at once; the second aborts what still runs, hands
    it back to pending, and skips the wait for connections.
    """

    def __init__(self, config: Any, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.signals = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve_then_stop(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await self.serve()
        finally:
            # After a forced exit uvicorn skips the lifespan shutdown.
            await self.runtime.stop()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not calling uvicorn's: it would re-raise the signal once served,
        # turning a clean shutdown into death by signal. The work is done
        # on the loop, not inside the signal handler.
        self.should_exit = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_signal)

    def _on_signal(self) -> None:
        self.signals += 1
        if _shutdown_stage(self.runtime, self.signals) == "forced":
            self.force_exit = True


def _shutdown_stage(runtime: Runtime, signals: int) -> str:
    """What the n-th SIGTERM/SIGINT does: graceful first, forced after."""
    if signals == 1:
        logger.info("stopping: signal received", extra={"action": "shutdown_requested"})
        runtime.begin_shutdown()
        return "graceful"
    logger.warning("stopping now: second signal", extra={"action": "shutdown_forced"})
    runtime.force_shutdown()
    return "forced"


async def _preflight(settings: Settings) -> None:
    """Fail before listening when the database or its schema is not usable."""
    engine = database.create_engine(database.database_url(settings), pool_size=1)
    try:
        await database.check_schema(engine)
    finally:
        await engine.dispose()


async def run_worker(settings: Settings) -> int:
    await _preflight(settings)
    runtime = Runtime(settings)
    await runtime.start()
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        _shutdown_stage(runtime, signals)
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    print(
        f"notify-worker worker {runtime.worker.id if runtime.worker else ''} running",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await runtime.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
    return 0
