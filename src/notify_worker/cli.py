"""The commands: serve, worker, migrate, user."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

import alembic.util
import asyncpg
from sqlalchemy.exc import DBAPIError

from . import database, logs, service, signing
from .config import ConfigError, Settings, load_settings
from .runtime import Runtime

logger = logging.getLogger("notify_worker.cli")

USER_NAME_MAX = 100


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notify-worker",
        description="Asynchronous webhook notifications on PostgreSQL.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="run the web service with a worker inside")
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
            return serve(settings)
        if args.command == "worker":
            return asyncio.run(run_worker(settings))
        if args.command == "migrate":
            return migrate(settings, args.direction, args.revision)
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
            user = await service.find_user(conn, name)
            if user is None:
                print(f"notify-worker: no user {name!r}", file=sys.stderr)
                return 1
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


def serve(settings: Settings) -> int:
    import uvicorn

    from .web.app import create_app

    asyncio.run(_preflight(settings))
    app = create_app(Runtime(settings))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        lifespan="on",
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_secs) + 5),
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it stopped on once it has shut down; exit
    # normally then, so atexit hooks (the embedded database's stop) run.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))
    print(
        f"notify-worker serving on http://{settings.host}:{settings.port}", flush=True
    )
    server.run()
    return 0 if server.started else 1


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
        if signals == 1:
            logger.info(
                "stopping: signal received", extra={"action": "shutdown_requested"}
            )
            stop.set()
        elif runtime.worker is not None:
            logger.warning(
                "stopping now: second signal", extra={"action": "shutdown_forced"}
            )
            runtime.worker.abandon_grace()

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
