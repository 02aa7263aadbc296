"""The HTTP routes: jobs for API clients (JSON) and for browsers (pages).

Each route answers JSON or HTML by the request: a form post or an Accept
header that asks for text/html gets a page, anything else JSON.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from .. import service
from ..status import JobStatus, UnknownStatus
from . import streams
from .auth import (
    LOGIN_COOKIE,
    LOGIN_MAX_AGE,
    SESSION_COOKIE,
    SESSION_MAX_AGE,
    check_csrf,
    check_login_csrf,
    current_owner,
    login_csrf_token,
    login_nonce,
    runtime_of,
    session_cookie_value,
)
from .inputs import (
    BodyTooLarge,
    InputErrors,
    body_limit,
    check_job_input,
    read_body,
)
from .pages import render

router = APIRouter()
# First: `/notify/stream` must match before `/notify/{job_id}` does.
router.include_router(streams.router)

MAX_FORM_FIELDS = 20
FORM_TYPE = "application/x-www-form-urlencoded"
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


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept


def is_form(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";")[0].strip() in {FORM_TYPE, "multipart/form-data"}


def job_url(job_id: uuid.UUID | str) -> str:
    return f"/notify/{job_id}"


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# Logging in and out.


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page(request: Request, next: str = "/notify") -> Response:
    return _login_form(request, _safe_next(next))


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    runtime = runtime_of(request)
    try:
        body = await read_body(request, 8 * 1024)
    except BodyTooLarge:
        return _login_form(request, "/notify", "That form is too large.", 413)
    form = dict(parse_qsl(body.decode("utf-8", "replace"), max_num_fields=5))
    next_url = _safe_next(form.get("next", "/notify"))
    if not check_login_csrf(request, form.get("csrf_token")):
        return _login_form(request, next_url, "The form expired: log in again.", 403)

    token = form.get("token", "").strip()
    assert runtime.engine is not None
    found = None
    if token:
        async with runtime.engine.connect() as conn:
            found = await service.authenticate(conn, token)
    if found is None:
        # Each wrong guess costs the guesser a second.
        await asyncio.sleep(1.0)
        return _login_form(request, next_url, "That token is not valid.", 401)

    response = see_other(next_url)
    response.set_cookie(
        SESSION_COOKIE,
        session_cookie_value(runtime, found[1]),
        max_age=SESSION_MAX_AGE,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


def _login_form(
    request: Request, next_url: str, error: str | None = None, status_code: int = 200
) -> Response:
    nonce = login_nonce(request)
    context = {
        "next": next_url,
        "error": error,
        "csrf_token": login_csrf_token(request, nonce),
    }
    response = render(request, "login.html", context, status_code)
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=LOGIN_MAX_AGE,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    # Another site must not be able to log people out either.
    if request.cookies.get(SESSION_COOKIE):
        try:
            raw = await _read_job_request(request, 8 * 1024, True)
        except InputErrors:
            raw = {}
        # The session cookie is what this request carries: hold it to the
        # same check as every other cookie-authenticated form.
        request.state.via_cookie = True
        check_csrf(request, raw.get("csrf_token"))
    response = see_other("/login")
    response.delete_cookie(SESSION_COOKIE)
    return response


def _safe_next(value: str) -> str:
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/notify"


# Jobs.


@router.post(
    "/notify",
    status_code=201,
    openapi_extra=CREATE_BODY,
    summary="Create a notify job",
    responses={303: {"description": "Form posts are sent to the job page"}},
)
async def create_job(
    request: Request, owner: service.User = Depends(current_owner)
) -> Response:
    runtime = runtime_of(request)
    settings = runtime.settings
    form = is_form(request)
    raw: dict[str, Any] = {}
    try:
        raw = await _read_job_request(request, body_limit(settings), form)
        if form:
            check_csrf(request, raw.get("csrf_token"))
        job_input = await check_job_input(raw, settings, payload_is_text=form)
    except InputErrors as exc:
        if form:
            # The same page again, the person's input kept, each message
            # beside its field.
            context = await _list_context(request, owner, None, 1)
            context.update(errors=exc.errors, form=raw)
            return render(request, "jobs.html", context, exc.status_code)
        return JSONResponse(exc.to_json(), status_code=exc.status_code)
    assert runtime.engine is not None
    async with runtime.engine.begin() as conn:
        job = await service.create_job(
            conn,
            owner.id,
            job_input.target_url,
            job_input.payload,
            max_attempts=job_input.max_attempts or settings.max_attempts,
        )
    # The row is committed: wake this process's worker without waiting for
    # the notification to come back from PostgreSQL.
    runtime.wake(job.id)
    if form:
        return see_other(job_url(job.id))
    return JSONResponse(
        job.to_json(), status_code=201, headers={"Location": job_url(job.id)}
    )


async def _read_job_request(request: Request, limit: int, form: bool) -> dict[str, Any]:
    try:
        body = await read_body(request, limit)
    except BodyTooLarge as exc:
        errors = InputErrors(status_code=413)
        errors.add("body", str(exc), status_code=413)
        raise errors from None
    if form:
        return await _parse_form(request, body)
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip() not in {"application/json", ""}:
        errors = InputErrors(status_code=415)
        errors.add("body", "send application/json or a form")
        errors.status_code = 415
        raise errors
    try:
        data = json.loads(body)
    except ValueError as exc:
        errors = InputErrors()
        errors.add("body", f"not valid JSON: {exc}")
        raise errors from None
    if not isinstance(data, dict):
        errors = InputErrors()
        errors.add("body", "must be a JSON object")
        raise errors
    return data


async def _parse_form(request: Request, body: bytes) -> dict[str, Any]:
    errors = InputErrors()
    try:
        if request.headers.get("content-type", "").startswith("multipart/"):
            parsed = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
            return {
                key: value for key, value in parsed.items() if isinstance(value, str)
            }
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except UnicodeDecodeError:
        errors.add("body", "the form is not UTF-8")
        raise errors from None
    except ValueError:
        errors.add("body", f"a form may hold at most {MAX_FORM_FIELDS} fields")
        raise errors from None
    except Exception as exc:  # Starlette's multipart parser errors
        errors.add("body", f"cannot read the form: {exc}")
        raise errors from None
    return dict(pairs)


@router.get("/notify", summary="List your jobs, newest first")
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


@router.get("/notify/{job_id}", summary="One job, with its attempts")
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


@router.post("/notify/{job_id}/cancel", summary="Cancel a pending or running job")
async def cancel_job(
    request: Request, job_id: uuid.UUID, owner: service.User = Depends(current_owner)
) -> Response:
    runtime = runtime_of(request)
    form = is_form(request)
    if form:
        try:
            raw = await _read_job_request(request, 8 * 1024, True)
        except InputErrors as exc:
            return JSONResponse(exc.to_json(), status_code=exc.status_code)
        check_csrf(request, raw.get("csrf_token"))
    assert runtime.engine is not None
    try:
        async with runtime.engine.begin() as conn:
            job = await service.cancel_job(conn, job_id, owner.id)
    except service.InvalidTransition as exc:
        if form:
            return see_other(job_url(job_id))
        return JSONResponse(
            {
                "detail": f"the job is already {exc.job.status}",
                "job": exc.job.to_json(),
            },
            status_code=409,
        )
    if form:
        return see_other(job_url(job.id))
    return JSONResponse(job.to_json())


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return see_other("/login?next=" + quote(target, safe=""))
