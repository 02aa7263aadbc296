"""Routes for operations: batch creates, manual retries, metrics, readiness.

They sit apart from the everyday job routes in routes.py, whose helpers
they share, so each module reads as one concern.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from .. import service
from ..config import Settings
from ..runtime import Runtime
from . import openapi
from .auth import current_owner, runtime_of
from .bodies import read_json_body
from .inputs import InputErrors, JobInput, body_limit, check_job_input
from .routes import (
    IDEMPOTENCY_HEADER,
    InvalidIdempotencyKey,
    check_idempotency_key,
    created_response,
    header_error,
    job_action,
)

router = APIRouter()

MAX_BATCH = 1000
# A batch of a thousand small jobs fits easily; one of large payloads is
# bounded so a single request cannot hold gigabytes in memory.
BATCH_BODY_BYTES = 16 * 1024 * 1024
# Checking an entry may resolve its host name; bound the lookups at once.
BATCH_CHECKS_AT_ONCE = 16
READY_TIMEOUT_SECS = 2.0


@router.post(
    "/notify/batch",
    status_code=201,
    summary=f"Create up to {MAX_BATCH} jobs at once, all or none",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_BATCH,
                        "items": {"type": "object"},
                    }
                }
            },
        }
    },
    responses={
        **openapi.responses(401, 403, 413, 415, 422),
        422: {"description": "Each bad entry, by index; nothing created"},
    },
)
async def create_batch(
    request: Request, owner: service.User = Depends(current_owner)
) -> Response:
    runtime = runtime_of(request)
    settings = runtime.settings
    try:
        entries = _batch_entries(
            await read_json_body(request, max(body_limit(settings), BATCH_BODY_BYTES))
        )
    except InputErrors as exc:
        return JSONResponse(exc.to_json(), status_code=exc.status_code)
    checked = await _check_entries(entries, settings)
    problems = [
        {"loc": ["body", index, name], "msg": message, "type": "value_error"}
        for index, result in enumerate(checked)
        if isinstance(result, InputErrors)
        for name, message in result.errors.items()
    ]
    if problems:
        return JSONResponse({"detail": problems}, status_code=422)
    jobs = [_new_job(result, settings) for result in checked]
    assert runtime.engine is not None
    async with runtime.engine.begin() as conn:
        created = await service.create_jobs(conn, owner.id, jobs)
    runtime.metrics.job_created(len(created))
    runtime.wake()
    return JSONResponse({"jobs": [job.to_json() for job in created]}, status_code=201)


def _batch_entries(data: Any) -> list[Any]:
    errors = InputErrors()
    if not isinstance(data, list):
        errors.add("body", "must be a JSON list of jobs")
    elif not data:
        errors.add("body", "must hold at least one job")
    elif len(data) > MAX_BATCH:
        errors.add("body", f"holds {len(data)} jobs, more than the {MAX_BATCH} allowed")
    if errors.errors:
        raise errors
    return data


async def _check_entries(
    entries: list[Any], settings: Settings
) -> list[JobInput | InputErrors]:
    """Each entry checked as POST /notify checks a body: its input or its errors."""
    gate = asyncio.Semaphore(BATCH_CHECKS_AT_ONCE)

    async def check(entry: Any) -> JobInput | InputErrors:
        if not isinstance(entry, dict):
            errors = InputErrors()
            errors.add("entry", "must be a JSON object")
            return errors
        async with gate:
            try:
                return await check_job_input(entry, settings, payload_is_text=False)
            except InputErrors as exc:
                return exc

    return list(await asyncio.gather(*(check(entry) for entry in entries)))


def _new_job(job_input: JobInput | InputErrors, settings: Settings) -> service.NewJob:
    assert isinstance(job_input, JobInput)
    return service.NewJob(
        job_input.target_url,
        job_input.payload,
        job_input.max_attempts or settings.max_attempts,
    )


@router.post(
    "/notify/{job_id}/retry",
    status_code=201,
    summary="Retry a failed or cancelled job as a new job",
    responses={
        **openapi.responses(401, 403, 404, 409, 413, 422, html=True),
        303: {"description": "Form posts are sent to the new job's page"},
        409: {"description": "The job is not failed or cancelled"},
    },
)
async def retry_job(
    request: Request, job_id: uuid.UUID, owner: service.User = Depends(current_owner)
) -> Response:
    runtime = runtime_of(request)
    key = request.headers.get(IDEMPOTENCY_HEADER)
    created = False
    if key is not None:
        try:
            check_idempotency_key(key)
        except InvalidIdempotencyKey as exc:
            return header_error(IDEMPOTENCY_HEADER, str(exc))

    async def act(conn: Any) -> service.Job:
        nonlocal created
        job, created = await service.retry_job(conn, job_id, owner.id, key=key)
        return job

    def answer(job: service.Job, form: bool) -> Response:
        if created:
            runtime.metrics.job_created()
            runtime.wake(job.id)
        return created_response(job, form)

    try:
        return await job_action(
            request,
            job_id,
            act,
            lambda job: (
                f"only a failed or cancelled job can be retried; this one is {job.status}"
            ),
            answer,
        )
    except service.IdempotencyConflict as exc:
        return header_error(IDEMPOTENCY_HEADER, str(exc))


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    body = await runtime_of(request).metrics.scrape()
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/readyz",
    summary="Readiness: the database answers and the worker runs",
    responses={503: {"description": "The database or the worker is not working"}},
)
async def readyz(request: Request) -> Response:
    runtime = runtime_of(request)
    checks = {
        "database": await _database_check(runtime),
        "worker": _worker_check(runtime),
    }
    ready = checks["database"] == "ok" and checks["worker"] in {"ok", "not run here"}
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


async def _database_check(runtime: Runtime) -> str:
    if runtime.engine is None:
        return "not started"
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECS):
            async with runtime.engine.connect() as conn:
                await service.ping(conn)
    except Exception as exc:  # any failure means not ready; say which
        return f"unavailable: {exc.__class__.__name__}"
    return "ok"


def _worker_check(runtime: Runtime) -> str:
    if not runtime.run_worker:
        return "not run here"
    if runtime.worker is None or not runtime.worker.running:
        return "stopped"
    return "ok"
