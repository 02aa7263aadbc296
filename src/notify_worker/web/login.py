"""Logging in and out: a token traded for a session cookie, and back.

The login form carries its own CSRF token (there is no session yet to
derive one from), failed tries are throttled per client, and a logout ends
the session on the server too.
"""

from __future__ import annotations

import logging
import math
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from .. import service
from .auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_MAX_AGE,
    check_csrf,
    check_login_csrf,
    is_https,
    login_form_key,
    login_throttle,
    runtime_of,
    session_cookie_value,
    session_of,
)
from .bodies import read_job_request
from .inputs import BodyTooLarge, InputErrors, read_body
from .pages import render, see_other

logger = logging.getLogger(__name__)

router = APIRouter()

# How long a login page stays usable before its form must be reloaded.
LOGIN_FORM_MAX_AGE = 3600


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page(request: Request, next: str = "/notify") -> Response:
    return _login_form(request, _safe_next(next), None, 200)


def _login_form(
    request: Request, next_url: str, error: str | None, status_code: int
) -> Response:
    cookie, token = login_form_key(request)
    context = {"next": next_url, "error": error, "login_token": token}
    response = render(request, "login.html", context, status_code)
    response.set_cookie(
        LOGIN_COOKIE,
        cookie,
        max_age=LOGIN_FORM_MAX_AGE,
        path="/login",
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )
    return response


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    runtime = runtime_of(request)
    try:
        body = await read_body(request, 8 * 1024)
        form = dict(parse_qsl(body.decode(), max_num_fields=5, errors="strict"))
    except (BodyTooLarge, ValueError):
        return _login_form(request, "/notify", "That form is not valid.", 400)
    next_url = _safe_next(form.get("next", "/notify"))
    check_login_csrf(request, form.get("login_token"))
    client = request.client.host if request.client else "unknown"
    throttle = login_throttle(request)
    wait = throttle.begin(client)
    if wait > 0:
        response = _login_form(
            request, next_url, "Too many failed logins: wait and retry.", 429
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    token = form.get("token", "").strip()
    assert runtime.engine is not None
    found = None
    generation = 0
    if token:
        async with runtime.engine.connect() as conn:
            found = await service.authenticate(conn, token)
            if found is not None:
                generation = await service.session_generation(conn, found[1])
    if found is None:
        logger.warning(
            "login failed", extra={"action": "login_failed", "client": client}
        )
        return _login_form(request, next_url, "That token is not valid.", 401)
    throttle.succeeded(client)
    response = see_other(next_url)
    response.set_cookie(
        SESSION_COOKIE,
        session_cookie_value(runtime, found[1], generation),
        max_age=SESSION_MAX_AGE,
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    # Another site must not be able to log people out either.
    if request.cookies.get(SESSION_COOKIE):
        try:
            raw = await read_job_request(request, 8 * 1024, True)
        except InputErrors:
            raw = {}
        # The session cookie is what this request carries: hold it to the
        # same check as every other cookie-authenticated form.
        request.state.via_cookie = True
        check_csrf(request, raw.get("csrf_token"))
        # End the session on the server too: a copy of the cookie taken
        # before the logout must not keep working for its 14 days.
        session = session_of(request)
        engine = runtime_of(request).engine
        if session is not None and engine is not None:
            async with engine.begin() as conn:
                await service.end_sessions(conn, session[0])
    response = see_other("/login")
    response.delete_cookie(
        SESSION_COOKIE, httponly=True, samesite="lax", secure=is_https(request)
    )
    return response


def _safe_next(value: str) -> str:
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/notify"


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return see_other("/login?next=" + quote(target, safe=""))
