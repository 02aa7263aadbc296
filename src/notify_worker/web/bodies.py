"""Reading request bodies: capped while they arrive, then parsed.

A body is refused as soon as it passes its limit, never read in full
first; JSON is parsed strictly, forms as UTF-8 with a bounded field count.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request

from .inputs import BodyTooLarge, InputErrors, parse_json, read_body

MAX_FORM_FIELDS = 20


async def read_job_request(request: Request, limit: int, form: bool) -> dict[str, Any]:
    body = await read_capped(request, limit)
    if form and body.lstrip()[:1] in {b"{", b"["}:
        # curl -d sends a form unless told otherwise: say so, rather than
        # report the whole JSON document as one unknown form field.
        errors = InputErrors(status_code=415)
        errors.add(
            "body",
            "this looks like JSON sent as a form: add `Content-Type: application/json`",
        )
        errors.status_code = 415
        raise errors
    if form:
        return await parse_form(request, body)
    data = parse_json_body(request, body)
    if not isinstance(data, dict):
        errors = InputErrors()
        errors.add("body", "must be a JSON object")
        raise errors
    return data


async def read_json_body(request: Request, limit: int) -> Any:
    """The request's JSON document, read within `limit` bytes."""
    return parse_json_body(request, await read_capped(request, limit))


async def read_capped(request: Request, limit: int) -> bytes:
    try:
        return await read_body(request, limit)
    except BodyTooLarge as exc:
        errors = InputErrors(status_code=413)
        errors.add("body", str(exc), status_code=413)
        raise errors from None


def parse_json_body(request: Request, body: bytes) -> Any:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip() not in {"application/json", ""}:
        errors = InputErrors(status_code=415)
        errors.add("body", "send application/json or a form")
        errors.status_code = 415
        raise errors
    try:
        return parse_json(body)
    except ValueError as exc:
        errors = InputErrors()
        errors.add("body", f"not valid JSON: {exc}")
        raise errors from None


async def parse_form(request: Request, body: bytes) -> dict[str, Any]:
    errors = InputErrors()
    try:
        if request.headers.get("content-type", "").startswith("multipart/"):
            parsed = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
            return {
                key: value for key, value in parsed.items() if isinstance(value, str)
            }
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            max_num_fields=MAX_FORM_FIELDS,
            errors="strict",
        )
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
