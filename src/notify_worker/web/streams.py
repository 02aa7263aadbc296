"""Server-Sent Events: a job's status now, then each change as it happens.

A stream reads the table once when it opens (a notification has no replay)
and then only waits on its subscription to the process's event hub, so an
idle stream costs the database nothing and holds none of its connections.
Starlette cancels the body when the client goes away (uvicorn reports the
disconnect), and leaving the `with subscription` block frees the rest.

Two shapes share the code: one job's stream, whose `id:` is the change
counter for `Last-Event-ID`, and a job list's stream, one connection for
every unfinished row of a page (browsers allow six connections per host).
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import StreamingResponse

from .. import service
from ..database import UNAVAILABLE_ERRORS
from ..events import CLOSED, RESYNC, StatusEvent, Subscription
from . import openapi
from .auth import current_owner, runtime_of

router = APIRouter()

MAX_LIST_JOBS = 200
KEEPALIVE = b": keep-alive\n\n"
# Proxies must pass each event on at once, and no middleware may compress
# the body (a compressor holds bytes back until its buffer fills). GZip
# middlewares skip a response that already names its encoding.
STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "Content-Encoding": "identity",
}
SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}},
    204: {"description": "Nothing left to stream: the final event was seen"},
    **openapi.responses(401, 404, 422, html=True),
}

Reload = Callable[[], Awaitable[list[service.Job]]]


@router.get(
    "/notify/stream",
    summary="Server-Sent Events for several jobs: a list page's live rows",
    response_class=StreamingResponse,
    responses=SSE_RESPONSES,
)
async def stream_jobs(
    request: Request,
    job: list[uuid.UUID] = Query(default=[], max_length=MAX_LIST_JOBS),
    owner: service.User = Depends(current_owner),
) -> Response:
    ids = set(job)

    async def reload() -> list[service.Job]:
        async with _engine(request).connect() as conn:
            return await service.get_jobs(conn, ids, owner.id)

    subscription, jobs = await _subscribe_then_read(request, ids, reload)
    if len(jobs) < len(ids):
        # Another owner's job is 404 here too, as on every route.
        subscription.close()
        raise service.NotFound(next(iter(ids - {found.id for found in jobs})))
    if all(found.status.is_terminal for found in jobs):
        # Also what a reconnect gets once every row has ended.
        subscription.close()
        return Response(status_code=204)
    open_ids = {found.id for found in jobs}
    return _stream(request, subscription, jobs, reload, open_ids, with_ids=False)


@router.get(
    "/notify/{job_id}/stream",
    summary="Server-Sent Events: the job's status now, then each change",
    response_class=StreamingResponse,
    responses=SSE_RESPONSES,
)
async def stream_job(
    request: Request, job_id: uuid.UUID, owner: service.User = Depends(current_owner)
) -> Response:
    async def reload() -> list[service.Job]:
        async with _engine(request).connect() as conn:
            found = await service.get_job(conn, job_id, owner.id)
        return [] if found is None else [found]

    subscription, jobs = await _subscribe_then_read(request, {job_id}, reload)
    if not jobs:
        subscription.close()
        raise service.NotFound(job_id)

    job = jobs[0]
    seen = _last_event_id(request)
    if job.status.is_terminal and seen is not None and seen >= job.version:
        subscription.close()
        return Response(status_code=204)

    sent = {job.id: seen} if seen is not None and seen <= job.version else {}
    return _stream(request, subscription, jobs, reload, {job.id}, sent=sent)


def _engine(request: Request) -> AsyncEngine:
    engine = runtime_of(request).engine
    assert engine is not None
    return engine


async def _subscribe_then_read(
    request: Request, job_ids: set[uuid.UUID], reload: Reload
) -> tuple[Subscription, list[service.Job]]:
    hub = runtime_of(request).hub
    assert hub is not None
    # Subscribe before reading the rows, so no change falls between the two.
    subscription = hub.subscribe(*job_ids, owner_id=request.state.owner.id)
    try:
        return subscription, await reload()
    except BaseException:
        subscription.close()
        raise


def _last_event_id(request: Request) -> int | None:
    value = request.headers.get("last-event-id", "").strip()
    return int(value) if value.isdigit() else None


def _stream(
    request: Request,
    subscription: Subscription,
    jobs: list[service.Job],
    reload: Reload,
    open_ids: set[uuid.UUID],
    *,
    sent: dict[uuid.UUID, int] | None = None,
    with_ids: bool = True,
) -> StreamingResponse:
    keepalive_secs = runtime_of(request).settings.keepalive_secs
    body = _events(
        subscription, jobs, reload, open_ids, sent or {}, keepalive_secs, with_ids
    )
    return StreamingResponse(
        body, media_type="text/event-stream", headers=STREAM_HEADERS
    )


# The hub hands the same event object to every stream of a job: encode it
# once, not once per stream (a thousand streams share one change).
@functools.lru_cache(maxsize=1024)
def sse_event(event: StatusEvent, with_id: bool = True) -> bytes:
    # json.dumps, never string formatting: an error message may hold quotes,
    # backslashes and newlines. Its output has no raw newline, so one
    # `data:` line carries the whole object.
    data = json.dumps(event.to_data(), ensure_ascii=False)
    head = f"id: {event.version}\n" if with_id else ""
    return f"{head}data: {data}\n\n".encode()


async def _events(
    subscription: Subscription,
    jobs: list[service.Job],
    reload: Reload,
    open_ids: set[uuid.UUID],
    sent: dict[uuid.UUID, int],
    keepalive_secs: float,
    with_ids: bool,
) -> AsyncIterator[bytes]:
    """The stream's body: every newer state of each job, until all have ended."""
    with subscription:
        batch = [StatusEvent.from_job(job) for job in jobs]
        while True:
            for event in batch:
                if event.version <= sent.get(event.job_id, -1):
                    continue
                sent[event.job_id] = event.version
                yield sse_event(event, with_ids)
                if event.status.is_terminal:
                    open_ids.discard(event.job_id)
            if not open_ids:
                return

            try:
                async with asyncio.timeout(keepalive_secs):
                    item = await subscription.get()
            except TimeoutError:
                yield KEEPALIVE
                batch = []
                continue

            if item is CLOSED:
                # The process is shutting down; EventSource reconnects.
                return
            if item is RESYNC:
                # The queue overflowed or the hub reconnected: events were
                # lost, so the table says where each job stands now.
                jobs = await _reload_patiently(reload)
                batch = [StatusEvent.from_job(job) for job in jobs]
            else:
                assert isinstance(item, StatusEvent)
                batch = [item]


async def _reload_patiently(reload: Reload) -> list[service.Job]:
    """The rows from the table, waiting out a database outage.

    A resync comes right after the listener reconnected, when the pool may
    still hold dead connections; the stream's headers are sent, so it has
    no error status to give: it waits (the client's disconnect cancels it).
    """
    delay = 0.5
    while True:
        try:
            return await reload()
        except UNAVAILABLE_ERRORS:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
