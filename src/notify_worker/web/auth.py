"""Who is asking: bearer tokens for API clients, a signed cookie for browsers.

The cookie holds only the id of the token the browser logged in with,
signed; revoking the token ends the session. Every write sent with the
cookie carries a CSRF token derived from it (a form field, or the
X-CSRF-Token header), which a bearer client never needs. The login form
has its own anti-forgery cookie, and failed logins are throttled per client.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from .. import service

if TYPE_CHECKING:
    from ..runtime import Runtime

SESSION_COOKIE = "notify_session"
SESSION_MAX_AGE = 14 * 24 * 3600
LOGIN_COOKIE = "notify_login"


class NotAuthenticated(Exception):
    """No credentials, or credentials that are not (or no longer) valid."""


class CsrfFailed(Exception):
    """A cookie-authenticated form without its CSRF token."""


def runtime_of(request: Request) -> Runtime:
    return request.app.state.notify_runtime


def _serializer(runtime: Runtime) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(runtime.secret_key, salt="notify-session")


def session_cookie_value(runtime: Runtime, token_id: int, generation: int) -> str:
    return _serializer(runtime).dumps({"token": token_id, "generation": generation})


def session_of(request: Request) -> tuple[int, int] | None:
    """The token id and session generation a valid cookie holds."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is None:
        return None
    try:
        data = _serializer(runtime_of(request)).loads(cookie, max_age=SESSION_MAX_AGE)
        return int(data["token"]), int(data.get("generation", 0))
    except (BadSignature, KeyError, TypeError, ValueError):
        return None


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
    session = session_of(request)
    if session is None:
        raise NotAuthenticated("the session is invalid or has expired")
    async with runtime.engine.connect() as conn:
        user = await service.user_for_session(conn, *session)
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


def check_csrf(request: Request, submitted: str | None) -> None:
    """Cookie-authenticated writes must echo the page's CSRF token."""
    if not getattr(request.state, "via_cookie", False):
        return
    expected = csrf_token(request)
    if not submitted or not hmac.compare_digest(expected, submitted):
        raise CsrfFailed("missing or wrong CSRF token: reload the page and retry")


def is_https(request: Request) -> bool:
    """Whether the browser reached us over HTTPS, directly or via a proxy.

    Trusting X-Forwarded-Proto here is safe: a forged header can only make
    the cookie stricter (Secure), never weaker.
    """
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0]
    return request.url.scheme == "https" or forwarded.strip().lower() == "https"


def login_form_key(request: Request) -> tuple[str, str]:
    """The login form's anti-forgery cookie and the token its form echoes.

    Without it, another site could post its own token to /login and have
    the victim's browser work inside the attacker's account.
    """
    cookie = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    return cookie, _login_token(request, cookie)


def _login_token(request: Request, cookie: str) -> str:
    return _mac(request, "login:" + cookie)


def check_login_csrf(request: Request, submitted: str | None) -> None:
    cookie = request.cookies.get(LOGIN_COOKIE)
    expected = _login_token(request, cookie) if cookie else ""
    if not expected or not submitted or not hmac.compare_digest(expected, submitted):
        raise CsrfFailed("the login form has expired: reload the page and retry")


class LoginThrottle:
    """Slows down repeated failed logins, per client, in bounded memory.

    Each login try counts as a failure until it succeeds, so guesses sent
    in parallel count too. After `free_tries`, each further try must wait
    twice as long as the one before, up to `max_delay`. At most
    `max_clients` clients are remembered; the least recently seen go first.
    """

    def __init__(
        self,
        *,
        free_tries: int = 3,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_tries = free_tries
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_clients = max_clients
        self._clock = clock
        # client -> (failures, monotonic time before which it must wait)
        self._clients: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def begin(self, client: str) -> float:
        """Count a try; the seconds to wait first, or 0 if it may go ahead."""
        now = self._clock()
        failures, not_before = self._clients.get(client, (0, 0.0))
        if failures and now - not_before > self.max_delay * 2:
            failures = 0
        if now < not_before:
            return not_before - now
        failures += 1
        self._remember(client, failures, now + self._delay(failures))
        return 0.0

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)

    def _delay(self, failures: int) -> float:
        if failures <= self.free_tries:
            return 0.0
        return min(
            self.max_delay, self.base_delay * 2 ** (failures - self.free_tries - 1)
        )

    def _remember(self, client: str, failures: int, not_before: float) -> None:
        self._clients[client] = (failures, not_before)
        self._clients.move_to_end(client)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)


def login_throttle(request: Request) -> LoginThrottle:
    """The application's throttle, made on first use."""
    state = request.app.state
    throttle = getattr(state, "notify_login_throttle", None)
    if throttle is None:
        throttle = state.notify_login_throttle = LoginThrottle()
    return throttle
