"""What the OpenAPI document says each route answers, errors included.

The routes build their JSON by hand (the job's fields come from the
service), so their shapes are written out here once and shared; the
schemathesis suite holds every real answer to them.
"""

from __future__ import annotations

from typing import Any

_TIME = {"type": ["string", "null"], "format": "date-time"}

JOB: dict[str, Any] = {
    "type": "object",
    "required": ["id", "owner_id", "target_url", "payload", "status", "attempts"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "owner_id": {"type": "integer"},
        "target_url": {"type": "string"},
        "payload": {},
        "status": {
            "type": "string",
            "enum": ["pending", "running", "success", "failed", "cancelled"],
        },
        "error_message": {"type": ["string", "null"]},
        "attempts": {"type": "integer"},
        "max_attempts": {"type": "integer"},
        "next_run_at": _TIME,
        "version": {"type": "integer"},
        "started_at": _TIME,
        "finished_at": _TIME,
        "created_at": _TIME,
        "updated_at": _TIME,
    },
}

JOB_PAGE: dict[str, Any] = {
    "type": "object",
    "required": ["jobs", "page", "per_page", "next_page"],
    "properties": {
        "jobs": {"type": "array", "items": JOB},
        "page": {"type": "integer"},
        "per_page": {"type": "integer"},
        "next_page": {"type": ["integer", "null"]},
    },
}

# Either a sentence, or one entry per field in FastAPI's own shape.
ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["loc", "msg", "type"],
                        "properties": {
                            "loc": {"type": "array"},
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                    },
                },
            ]
        }
    },
}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {}}}


def responses(*codes: int, html: bool = False) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route, by status code."""
    table = {
        401: _json("No credentials, or a revoked or invalid token", ERROR),
        403: _json("A cookie-authenticated write without its CSRF token", ERROR),
        404: _json("No such job, or a job of another owner", ERROR),
        409: _json("The job's status does not allow it", ERROR),
        413: _json("The body or the payload is too large", ERROR),
        415: _json("The body is neither JSON nor a form", ERROR),
        422: _json("A field is missing, unknown or invalid", ERROR),
        503: _json("The database is unavailable", ERROR),
    }
    chosen: dict[int | str, dict[str, Any]] = {code: table[code] for code in codes}
    chosen[503] = table[503]
    if html:
        # Browsers get the same answers as pages, or a redirect to log in.
        chosen[303] = _html("A form post's next page, or the login page")
        for code in codes:
            chosen[code] = {
                **chosen[code],
                "content": {**chosen[code]["content"], "text/html": {}},
            }
    return chosen


def ok(description: str, schema: dict[str, Any], *, html: bool) -> dict[str, Any]:
    answer = _json(description, schema)
    if html:
        answer["content"]["text/html"] = {}
    return answer
