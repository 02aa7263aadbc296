"""The commands: serve, worker, migrate, user, jobs, prune, send."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from types import FrameType
from typing import Any

import alembic.util
import asyncpg
import uvicorn
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from . import admin, client, database, echo, logs, service, signing
from .config import ConfigError, Settings, load_settings, parse_duration
from .runtime import Runtime
from .status import JobStatus, UnknownStatus

logger = logging.getLogger("notify_worker.cli")

USER_NAME_MAX = 100
MIN_RETENTION = timedelta(minutes=1)
MAX_RETENTION = timedelta(days=36_500)


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
    secret = actions.add_parser(
        "secret", help="create an owner's signing secret; prints it once"
    )
    secret.add_argument("name")
    secret.add_argument(
        "--rotate",
        action="store_true",
        help="replace the secret; the old one keeps signing for 24 hours",
    )

    _add_job_commands(commands)
    _add_send_command(commands)
    echo_target = commands.add_parser(
        "echo", help="a local target that prints every notification it receives"
    )
    echo_target.add_argument("--host", default="127.0.0.1")
    echo_target.add_argument("--port", type=int, default=9000)
    return parser


def _add_job_commands(commands: Any) -> None:
    jobs = commands.add_parser("jobs", help="inspect and act on every owner's jobs")
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the newest jobs, as a table")
    listing.add_argument("--status", help="only jobs in this status")
    listing.add_argument("--owner", help="only this owner's jobs (by name)")
    listing.add_argument("--limit", type=int, default=50)
    for name, text in (
        ("show", "one job and its attempts"),
        ("cancel", "cancel a pending or running job"),
        ("retry", "a new job from a failed or cancelled one"),
    ):
        actions.add_parser(name, help=text).add_argument("job_id", type=uuid.UUID)

    prune = commands.add_parser(
        "prune", help="delete finished jobs and their attempts, in batches"
    )
    prune.add_argument(
        "--older-than",
        required=True,
        type=_retention,
        metavar="DURATION",
        help="finished longer ago than this: 30d, 12h, 90m (at least 1m)",
    )
    prune.add_argument("--batch-size", type=_batch_size, default=500)


def _add_send_command(commands: Any) -> None:
    send = commands.add_parser("send", help="create a job through the HTTP API")
    send.add_argument("url", help="the target URL")
    send.add_argument("payload", type=_json, help="the payload, as JSON text")
    send.add_argument(
        "--follow", action="store_true", help="watch the job until it ends"
    )
    send.add_argument(
        "--server",
        default=os.environ.get("NOTIFY_URL", "http://127.0.0.1:8000"),
        help="the service's URL (default: $NOTIFY_URL or http://127.0.0.1:8000)",
    )
    send.add_argument(
        "--token",
        default=os.environ.get("NOTIFY_TOKEN"),
        help="an API token (default: $NOTIFY_TOKEN)",
    )
    send.add_argument("--max-attempts", type=int)
    send.add_argument("--idempotency-key")


def _duration(text: str) -> timedelta:
    try:
        return timedelta(seconds=parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _retention(text: str) -> timedelta:
    # A unit is required and a floor applies: `--older-than 0s` or a bare
    # `10` would quietly delete the history of every job that just ended.
    if text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} needs a unit: 30d, 12h, 90m")
    age = _duration(text)
    if age < MIN_RETENTION or age > MAX_RETENTION:
        raise argparse.ArgumentTypeError("must be between 1m and 100 years")
    return age


def _batch_size(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise argparse.ArgumentTypeError("must be a whole number from 1 to 10000")
    return int(text)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "send":
        return run_send(args)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"notify-worker: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        if args.command == "serve":
            return serve(settings, run_worker=not args.no_worker)
        if args.command == "echo":
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(echo.serve(args.host, args.port))
            return 0
        if args.command == "worker":
            return asyncio.run(run_worker(settings))
        if args.command == "migrate":
            return migrate(settings, args.direction, args.revision)
        if args.command == "jobs":
            return asyncio.run(with_engine(settings, _job_command(args)))
        if args.command == "prune":
            return asyncio.run(
                with_engine(
                    settings,
                    lambda engine: admin.prune(
                        engine, args.older_than, args.batch_size
                    ),
                )
            )
        rotate = getattr(args, "rotate", False)
        return asyncio.run(manage_user(settings, args.action, args.name, rotate))
    except (ConfigError, database.SchemaOutOfDate) as exc:
        print(f"notify-worker: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"notify-worker: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    except alembic.util.CommandError as exc:
        print(f"notify-worker: migrate: {exc}", file=sys.stderr)
        return 2
    except (DBAPIError, asyncpg.PostgresError) as exc:
        cause = getattr(exc, "orig", None) or exc
        print(f"notify-worker: database error: {cause}", file=sys.stderr)
        return 1


def run_send(args: argparse.Namespace) -> int:
    """`send` needs no database: only the service's URL and a token."""
    if not args.token:
        print("notify-worker: set NOTIFY_TOKEN or pass --token", file=sys.stderr)
        return client.EXIT_REFUSED
    return asyncio.run(
        client.send(
            args.server,
            args.token,
            args.url,
            args.payload,
            follow=args.follow,
            max_attempts=args.max_attempts,
            idempotency_key=args.idempotency_key,
        )
    )


def _job_command(args: argparse.Namespace) -> Callable[[AsyncEngine], Awaitable[int]]:
    if args.action == "list":
        try:
            status = JobStatus.parse(args.status) if args.status else None
        except UnknownStatus as exc:
            raise ConfigError(str(exc)) from None
        return lambda engine: admin.list_jobs(
            engine, status, args.owner, max(1, args.limit)
        )
    action = {
        "show": admin.show_job,
        "cancel": admin.cancel_job,
        "retry": admin.retry_job,
    }[args.action]
    return lambda engine: action(engine, args.job_id)


async def with_engine(
    settings: Settings, command: Callable[[AsyncEngine], Awaitable[int]]
) -> int:
    """Run an operator command on a small engine, after checking the schema."""
    engine = database.create_engine(database.database_url(settings), pool_size=1)
    try:
        await database.check_schema(engine)
        return await command(engine)
    finally:
        await engine.dispose()


def migrate(settings: Settings, direction: str, revision: str) -> int:
    url = database.database_url(settings)
    if direction == "upgrade":
        database.upgrade(url, revision)
    else:
        database.downgrade(url, revision)
    print(f"migrate {direction} {revision}: done")
    return 0


async def manage_user(
    settings: Settings, action: str, name: str, rotate: bool = False
) -> int:
    problem = _name_problem(name)
    if problem is not None:
        print(f"notify-worker: the user name {problem}", file=sys.stderr)
        return 2
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
            found = await service.find_user(conn, name)
            if found is None:
                print(f"notify-worker: no user {name!r}", file=sys.stderr)
                return 1
            user = found
            if action == "token":
                token = await service.create_token(conn, user.id)
                print(f"new API token for {user.name}, shown once:")
                print(token)
                return 0
            if action == "secret":
                return await _signing_secret(conn, user, rotate)
            count = await service.revoke_tokens(conn, user.id)
            print(f"revoked {count} token(s) of {user.name}")
            return 0
    finally:
        await engine.dispose()


async def _signing_secret(conn: Any, user: service.User, rotate: bool) -> int:
    try:
        secret = await service.create_signing_secret(
            conn, user.id, rotate=rotate, grace_secs=signing.ROTATION_GRACE_SECS
        )
    except service.SecretExists:
        print(
            f"notify-worker: {user.name} already has a signing secret; use --rotate",
            file=sys.stderr,
        )
        return 1
    if rotate:
        print(f"rotated the signing secret of {user.name}; the old one signs for 24 h")
    print(f"signing secret for {user.name}, shown once:")
    print(secret)
    return 0


def _name_problem(name: str) -> str | None:
    if not name.strip():
        return "must not be empty"
    if len(name) > USER_NAME_MAX:
        return f"must be at most {USER_NAME_MAX} characters"
    if any(not character.isprintable() for character in name):
        return "must not hold control characters"
    return None


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
    logger.info(
        "notify-worker serving on http://%s:%s",
        settings.host,
        settings.port,
        extra={
            "action": "serve_starting",
            "host": settings.host,
            "port": settings.port,
        },
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
    logger.info(
        "notify-worker worker running",
        extra={
            "action": "worker_process_running",
            "worker_id": str(runtime.worker.id) if runtime.worker else None,
        },
    )
    try:
        await stop.wait()
    finally:
        await runtime.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
    return 0
