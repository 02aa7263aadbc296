"""Rendering the HTML pages; Jinja2 escapes every value it prints."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..delivery import redact_url
from .auth import csrf_token

TEMPLATES = Path(__file__).parent / "templates"

# Scripts and styles come only from /static: no inline code, no build step.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pretty_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


environment.filters["when"] = _when
environment.filters["pretty_json"] = _pretty_json
# Credentials an owner put in a target URL never reach a page.
environment.filters["redact_url"] = redact_url


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    template = environment.get_template(name)
    values = {"csrf_token": csrf_token(request), "owner": None, **context}
    body = template.render(request=request, **values)
    return HTMLResponse(
        body,
        status_code=status_code,
        headers={
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


def see_other(url: str) -> RedirectResponse:
    """Where a browser goes next after a form: 303, so it GETs the page."""
    return RedirectResponse(url, status_code=303)
