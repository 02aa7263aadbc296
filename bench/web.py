"""The web process under test: the real app, no worker, settings from the
environment. `python -m bench.web` (the streams benchmark starts it)."""

from __future__ import annotations

import resource

import uvicorn

from notify_worker import Runtime, create_app, load_settings


def raise_fd_limit(wanted: int) -> int:
    """Lift the soft limit on open files towards `wanted` (never past hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main() -> None:
    raise_fd_limit(65_536)
    settings = load_settings()
    app = create_app(Runtime(settings, run_worker=False))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=settings.port,
        log_config=None,
        lifespan="on",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
