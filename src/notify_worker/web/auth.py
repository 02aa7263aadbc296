"""Who is asking: bearer tokens for API clients, a signed cookie for browsers.

The cookie holds only the id of the token the browser logged in with,
signed; revoking the token ends the session. Forms sent with the cookie
carry a CSRF token derived from it, which a bearer client never needs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from .. import service

if TYPE_CHECKING:
    from ..runtime import Runtime

SESSION_COOKIE = "notify_session"
SESSION_MAX_AGE = 14 * 24 * 3600
LOGIN_COOKIE = "notify_login"
LOGIN_MAX_AGE = 3600


class NotAuthenticated(Exception):
    """No credentials, or credentials that are not (or no longer) valid."""


class CsrfFailed(Exception):
    """A cookie-authenticated form without its CSRF token."""


def runtime_of(request: Request) -> Runtime:
    return request.app.state.notify_runtime


def _serializer(runtime: Runtime) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(runtime.secret_key, salt="notify-session")


def session_cookie_value(runtime: Runtime, token_id: int) -> str:
    return _serializer(runtime).dumps({"token": token_id})


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise NotAuthenticated("the Authorization header must be `Bearer <token>`")
    return value.strip()


async def current_owner(request: Request) -> service.User:
    """The FastAPI dependency every owner route uses."""
    cached = getattr(request.state, "owner", None)
    if cached is not None:
        return cached
    runtime = runtime_of(request)
    assert runtime.engine is not None
    token = _bearer(request)
    if token is not None:
        async with runtime.engine.connect() as conn:
            found = await service.authenticate(conn, token)
        if found is None:
            raise NotAuthenticated("invalid or revoked token")
        request.state.owner, request.state.via_cookie = found[0], False
        return found[0]
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is None:
        raise NotAuthenticated("credentials required")
    try:
        data = _serializer(runtime).loads(cookie, max_age=SESSION_MAX_AGE)
    except BadSignature:
        raise NotAuthenticated("the session is invalid or has expired") from None
    async with runtime.engine.connect() as conn:
        user = await service.user_for_token_id(conn, int(data["token"]))
    if user is None:
        raise NotAuthenticated("the session has ended")
    request.state.owner, request.state.via_cookie = user, True
    return user


def _mac(request: Request, message: str) -> str:
    key = runtime_of(request).secret_key.encode()
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    """The token a page puts in its forms; empty without a session."""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if not cookie:
        return ""
    return _mac(request, "csrf:" + cookie)


def login_nonce(request: Request) -> str:
    """The login form's own CSRF secret: the browser's, or a new one.

    There is no session to derive a token from before logging in, so the
    login page sets this nonce in a cookie and the form echoes its MAC: a
    page on another site can post to /login but cannot read either.
    """
    return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(18)


def login_csrf_token(request: Request, nonce: str) -> str:
    return _mac(request, "login:" + nonce)


def check_login_csrf(request: Request, submitted: str | None) -> bool:
    nonce = request.cookies.get(LOGIN_COOKIE)
    if not nonce or not submitted:
        return False
    return hmac.compare_digest(login_csrf_token(request, nonce), submitted)


def check_csrf(request: Request, submitted: str | None) -> None:
    """Cookie-authenticated writes must echo the page's CSRF token."""
    if not getattr(request.state, "via_cookie", False):
        return
    expected = csrf_token(request)
    if not submitted or not hmac.compare_digest(expected, submitted):
        raise CsrfFailed("missing or wrong CSRF token: reload the page and retry")
