"""The HTTP routes: jobs for API clients (JSON) and for browsers (pages).

Each route answers JSON or HTML by the request: a form post or an Accept
header that asks for text/html gets a page, anything else JSON.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from .. import service
from ..status import JobStatus, UnknownStatus
from . import login, openapi, streams
from .auth import (
    check_csrf,
    current_owner,
    runtime_of,
)
from .bodies import read_job_request
from .inputs import (
    InputErrors,
    JobInput,
    body_limit,
    check_job_input,
)
from .pages import render, see_other

logger = logging.getLogger(__name__)

router = APIRouter()

# First: `/notify/stream` must match before `/notify/{job_id}` does.
router.include_router(streams.router)
router.include_router(login.router)

FORM_TYPE = "application/x-www-form-urlencoded"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 255
CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["target_url", "payload"],
                    "additionalProperties": False,
                    "properties": {
                        "target_url": {"type": "string", "maxLength": 2048},
                        "payload": {},
                        "max_attempts": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 100,
                        },
                    },
                }
            },
            FORM_TYPE: {
                "schema": {
                    "type": "object",
                    "required": ["target_url", "payload"],
                    "properties": {
                        "target_url": {"type": "string"},
                        "payload": {"type": "string"},
                        "csrf_token": {"type": "string"},
                    },
                }
            },
        },
    }
}


class InvalidIdempotencyKey(ValueError):
    """An Idempotency-Key header no client library would send."""


def wants_html(request: Request) -> bool:
    """Whether the client prefers a page to JSON, by its Accept q-values."""
    html = json_ = 0.0
    for part in request.headers.get("accept", "").split(","):
        kind, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        kind = kind.strip().lower()
        if kind in {"text/html", "application/xhtml+xml"}:
            html = max(html, quality)
        elif kind == "application/json":
            json_ = max(json_, quality)
    return html > 0 and html >= json_


def is_form(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";")[0].strip() in {FORM_TYPE, "multipart/form-data"}


def job_url(job_id: uuid.UUID | str) -> str:
    return f"/notify/{job_id}"


# Jobs.


@router.post(
    "/notify",
    status_code=201,
    openapi_extra=CREATE_BODY,
    summary="Create a notify job",
    description=(
        "With an `Idempotency-Key` header, a repeat of the same request by the "
        "same owner within 24 hours answers as the first one did and creates "
        "nothing; the same key with a different request is 422."
    ),
    responses={
        201: openapi.ok("The job, created", openapi.JOB, html=False),
        **openapi.responses(401, 403, 413, 415, 422, html=True),
    },
)
async def create_job(
    request: Request, owner: service.User = Depends(current_owner)
) -> Response:
    runtime = runtime_of(request)
    settings = runtime.settings
    form = is_form(request)
    raw: dict[str, Any] = {}
    try:
        raw = await read_job_request(request, body_limit(settings), form)
        check_csrf(request, _submitted_csrf(request, raw, form))
        job_input = await check_job_input(
            raw, settings, payload_is_text=form, lookup=runtime.lookup
        )
    except InputErrors as exc:
        if form:
            # The same page again, the person's input kept, each message
            # beside its field.
            context = await _list_context(request, owner, None, 1)
            context.update(errors=exc.errors, form=raw)
            return render(request, "jobs.html", context, exc.status_code)
        return JSONResponse(exc.to_json(), status_code=exc.status_code)
    new = service.NewJob(
        job_input.target_url,
        job_input.payload,
        job_input.max_attempts or settings.max_attempts,
    )
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        job, created = await _insert_job(request, owner, new), True
    else:
        try:
            job, created = await _insert_job_once(request, owner, new, key, job_input)
        except (InvalidIdempotencyKey, service.IdempotencyConflict) as exc:
            return header_error(IDEMPOTENCY_HEADER, str(exc))
    if created:
        # The row is committed: wake this process's worker without waiting
        # for the notification to come back from PostgreSQL.
        runtime.metrics.job_created()
        runtime.wake(job.id)
    return created_response(job, form)


def created_response(job: service.Job, form: bool) -> Response:
    """How a create answers: a form goes to the job page, JSON gets the job."""
    if form:
        return see_other(job_url(job.id))
    return JSONResponse(
        job.to_json(), status_code=201, headers={"Location": job_url(job.id)}
    )


def _submitted_csrf(request: Request, raw: dict[str, Any], form: bool) -> str | None:
    # Forms carry it as a field; any other cookie-authenticated write (a
    # script's fetch) sends it as a header, which no other site can set.
    if form:
        return raw.get("csrf_token")
    return request.headers.get("x-csrf-token")


def header_error(name: str, message: str) -> JSONResponse:
    detail = [{"loc": ["header", name], "msg": message, "type": "value_error"}]
    return JSONResponse({"detail": detail}, status_code=422)


async def _insert_job(
    request: Request, owner: service.User, new: service.NewJob
) -> service.Job:
    # One INSERT, committed when it returns: no BEGIN and COMMIT round trips.
    autocommit = runtime_of(request).autocommit_engine
    assert autocommit is not None
    async with autocommit.connect() as conn:
        return await service.create_job(
            conn,
            owner.id,
            new.target_url,
            new.payload,
            max_attempts=new.max_attempts,
        )


def check_idempotency_key(key: str) -> None:
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidIdempotencyKey(
            f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters"
        )


async def _insert_job_once(
    request: Request,
    owner: service.User,
    new: service.NewJob,
    key: str,
    job_input: JobInput,
) -> tuple[service.Job, bool]:
    """Create under an Idempotency-Key, or find what the key created before."""
    check_idempotency_key(key)
    # The fingerprint covers what was asked, before defaults are applied, so
    # a change of NOTIFY_MAX_ATTEMPTS does not turn a replay into a conflict.
    fingerprint = service.request_fingerprint(
        job_input.target_url, job_input.payload, job_input.max_attempts
    )
    engine = runtime_of(request).engine
    assert engine is not None
    async with engine.begin() as conn:
        return await service.create_job_once(conn, owner.id, new, key, fingerprint)


@router.get(
    "/notify",
    summary="List your jobs, newest first",
    responses={
        200: openapi.ok("One page of jobs", openapi.JOB_PAGE, html=True),
        **openapi.responses(401, 422, html=True),
    },
)
async def list_jobs(
    request: Request,
    status: str | None = Query(default=None, description="Only jobs in this status"),
    page: int = Query(default=1, ge=1, le=100_000),
    per_page: int = Query(default=50, ge=1, le=200),
    owner: service.User = Depends(current_owner),
) -> Response:
    try:
        wanted = JobStatus.parse(status) if status else None
    except UnknownStatus as exc:
        if wants_html(request):
            context = {"title": "Unknown status", "message": str(exc), "owner": owner}
            return render(request, "error.html", context, 422)
        return JSONResponse(
            {
                "detail": [
                    {"loc": ["query", "status"], "msg": str(exc), "type": "value_error"}
                ]
            },
            status_code=422,
        )
    if wants_html(request):
        context = await _list_context(request, owner, wanted, page, per_page)
        return render(request, "jobs.html", context)
    jobs = await _page_of_jobs(request, owner, wanted, page, per_page)
    more = len(jobs) > per_page
    return JSONResponse(
        {
            "jobs": [job.to_json() for job in jobs[:per_page]],
            "page": page,
            "per_page": per_page,
            "next_page": page + 1 if more else None,
        }
    )


async def _page_of_jobs(
    request: Request,
    owner: service.User,
    status: JobStatus | None,
    page: int,
    per_page: int,
) -> list[service.Job]:
    """One page of jobs, and one more to tell whether a next page exists."""
    runtime = runtime_of(request)
    assert runtime.engine is not None
    async with runtime.engine.connect() as conn:
        return await service.list_jobs(
            conn,
            owner.id,
            status=status,
            limit=per_page + 1,
            offset=(page - 1) * per_page,
        )


async def _list_context(
    request: Request,
    owner: service.User,
    status: JobStatus | None,
    page: int,
    per_page: int = 50,
) -> dict[str, Any]:
    jobs = await _page_of_jobs(request, owner, status, page, per_page)
    return {
        "owner": owner,
        "jobs": jobs[:per_page],
        "status": status,
        "statuses": list(JobStatus),
        "page": page,
        "per_page": per_page,
        "has_next": len(jobs) > per_page,
        "errors": {},
        "form": {},
    }


async def _owned_job(
    request: Request, job_id: uuid.UUID, owner: service.User
) -> service.Job:
    runtime = runtime_of(request)
    assert runtime.engine is not None
    async with runtime.engine.connect() as conn:
        job = await service.get_job(conn, job_id, owner.id)
    if job is None:
        raise service.NotFound(job_id)
    return job


@router.get(
    "/notify/{job_id}",
    summary="One job, with its attempts",
    responses={
        200: openapi.ok("The job and its attempts", openapi.JOB, html=True),
        **openapi.responses(401, 404, 422, html=True),
    },
)
async def show_job(
    request: Request, job_id: uuid.UUID, owner: service.User = Depends(current_owner)
) -> Response:
    job = await _owned_job(request, job_id, owner)
    runtime = runtime_of(request)
    assert runtime.engine is not None
    async with runtime.engine.connect() as conn:
        attempts = await service.list_attempts(conn, job.id)
    if wants_html(request):
        return render(
            request, "job.html", {"owner": owner, "job": job, "attempts": attempts}
        )
    return JSONResponse(
        {**job.to_json(), "attempt_history": [a.to_json() for a in attempts]}
    )


@router.post(
    "/notify/{job_id}/cancel",
    summary="Cancel a pending or running job",
    responses={
        200: openapi.ok("The job, cancelled", openapi.JOB, html=False),
        **openapi.responses(401, 403, 404, 409, 413, 422, html=True),
    },
)
async def cancel_job(
    request: Request, job_id: uuid.UUID, owner: service.User = Depends(current_owner)
) -> Response:
    runtime = runtime_of(request)

    def answer(job: service.Job, form: bool) -> Response:
        runtime.metrics.job_finished(job.status)
        return see_other(job_url(job.id)) if form else JSONResponse(job.to_json())

    return await job_action(
        request,
        job_id,
        lambda conn: service.cancel_job(conn, job_id, owner.id),
        lambda job: f"the job has already ended ({job.status})",
        answer,
    )


async def job_action(
    request: Request,
    job_id: uuid.UUID,
    act: Callable[[AsyncConnection], Awaitable[service.Job]],
    refusal: Callable[[service.Job], str],
    answer: Callable[[service.Job, bool], Response],
) -> Response:
    """A write on one job, from a form or an API client, in one transaction.

    A refused change sends a form back to the job page and answers an API
    client 409 with the reason and the job as it is.
    """
    runtime = runtime_of(request)
    try:
        form = await checked_form(request)
    except InputErrors as exc:
        return JSONResponse(exc.to_json(), status_code=exc.status_code)
    assert runtime.engine is not None
    try:
        async with runtime.engine.begin() as conn:
            job = await act(conn)
    except service.InvalidTransition as exc:
        if form:
            return see_other(job_url(job_id))
        return conflict(refusal(exc.job), exc.job)
    return answer(job, form)


async def checked_form(request: Request) -> bool:
    """Whether a write on a job came from a form, whose CSRF token is checked."""
    form = is_form(request)
    raw = await read_job_request(request, 8 * 1024, True) if form else {}
    check_csrf(request, _submitted_csrf(request, raw, form))
    return form


def conflict(detail: str, job: service.Job) -> JSONResponse:
    return JSONResponse({"detail": detail, "job": job.to_json()}, status_code=409)


@router.head("/healthz", include_in_schema=False)
@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
