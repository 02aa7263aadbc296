"""The application factory, and the router a host application can mount."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.requests import ClientDisconnect

from .. import service
from ..database import UNAVAILABLE_ERRORS
from ..runtime import Runtime
from .auth import CsrfFailed, NotAuthenticated
from .login import login_redirect
from .operations import router as operations_router
from .pages import render
from .routes import router, wants_html

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Add notify-worker's routes, static files and error pages to `app`."""
    app.include_router(router)
    app.include_router(operations_router)
    app.mount("/static/notify", StaticFiles(directory=STATIC), name="notify-static")
    app.add_exception_handler(NotAuthenticated, _not_authenticated)
    app.add_exception_handler(service.NotFound, _not_found)
    app.add_exception_handler(CsrfFailed, _csrf_failed)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    for error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, _database_unavailable)


def create_app(runtime: Runtime | None = None) -> FastAPI:
    """The whole service as one ASGI application, worker included."""
    runtime = runtime if runtime is not None else Runtime()
    # FastAPIOffline is FastAPI with /docs served from files in its wheel,
    # not from a CDN: the API's page works on a machine with no way out.
    app = FastAPIOffline(
        title="notify-worker",
        version="0.1.0",
        description="Asynchronous webhook notifications with live status.",
        lifespan=runtime.lifespan,
    )
    app.state.notify_runtime = runtime
    install(app)

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return Response(status_code=303, headers={"Location": "/notify"})

    return app


async def _not_authenticated(request: Request, exc: Exception) -> Response:
    if wants_html(request):
        return login_redirect(request)
    return JSONResponse(
        {"detail": str(exc)},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    if wants_html(request):
        return render(
            request,
            "error.html",
            {"title": "Not found", "message": "No such job."},
            404,
        )
    return JSONResponse({"detail": "no such job"}, status_code=404)


async def _csrf_failed(request: Request, exc: Exception) -> Response:
    if wants_html(request):
        return render(
            request, "error.html", {"title": "Form expired", "message": str(exc)}, 403
        )
    return JSONResponse({"detail": str(exc)}, status_code=403)


UNAVAILABLE_MESSAGE = "the database is unavailable; retry in a few seconds"


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    # One line without the traceback: during an outage every request fails
    # the same way, and the cause is the database, not this request.
    logger.warning(
        "database unavailable",
        extra={
            "action": "database_unavailable",
            "path": request.url.path,
            "error": exc.__class__.__name__,
        },
    )
    headers = {"Retry-After": "5"}
    if wants_html(request):
        context = {"title": "Service unavailable", "message": UNAVAILABLE_MESSAGE}
        response = render(request, "error.html", context, 503)
        response.headers.update(headers)
        return response
    return JSONResponse(
        {"detail": UNAVAILABLE_MESSAGE}, status_code=503, headers=headers
    )


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client left while sending its body: nobody reads this answer, and
    # it is no server error worth a traceback.
    logger.info(
        "client went away mid-request",
        extra={"action": "client_disconnected", "path": request.url.path},
    )
    return Response(status_code=400)
