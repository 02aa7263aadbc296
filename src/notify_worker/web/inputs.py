"""Checking what an owner submits, before anything is stored.

Each problem is reported against its field with a message a person can
act on; a request with any problem stores nothing.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from yarl import URL

from ..addresses import is_canonical, literal_address
from ..config import IPNetwork, Settings
from ..delivery import BlockedAddress, NameLookup, resolve_target, system_lookup

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECS = 5.0
# Whitespace and control characters: a URL that holds them is either a
# paste error or an attempt at header or request smuggling.
_UNSAFE_URL_CHARACTERS = re.compile(r"[\x00-\x20\x7f-\x9f]")


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")
        self.limit = limit


@dataclass
class InputErrors(Exception):
    errors: dict[str, str] = field(default_factory=dict)
    status_code: int = 422

    def add(self, name: str, message: str, *, status_code: int = 422) -> None:
        self.errors.setdefault(name, message)
        if status_code == 413:
            self.status_code = 413

    def to_json(self) -> dict[str, Any]:
        return {
            "detail": [
                {"loc": ["body", name], "msg": message, "type": "value_error"}
                for name, message in self.errors.items()
            ]
        }


@dataclass(frozen=True)
class JobInput:
    target_url: str
    payload: str
    max_attempts: int | None = None


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes `limit` (never read in full)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    # Starlette keeps the body here so request.form() and .json() reuse it.
    request._body = body
    return body


def body_limit(settings: Settings) -> int:
    # A form encodes each non-ASCII byte as three, so leave room for that.
    return settings.max_payload_bytes * 3 + 16 * 1024


async def check_job_input(
    raw: dict[str, Any],
    settings: Settings,
    *,
    payload_is_text: bool,
    lookup: NameLookup = system_lookup,
) -> JobInput:
    errors = InputErrors()
    allowed = {"target_url", "payload", "max_attempts", "csrf_token"}
    for name in raw:
        if name not in allowed:
            errors.add(str(name), f"unknown field {name!r}")
    url = await _check_url(raw.get("target_url"), settings, lookup, errors)
    payload = _check_payload(raw, settings, errors, payload_is_text=payload_is_text)
    max_attempts = _check_attempts(
        raw.get("max_attempts"), errors, from_form=payload_is_text
    )
    if errors.errors:
        raise errors
    assert url is not None and payload is not None
    return JobInput(target_url=url, payload=payload, max_attempts=max_attempts)


async def _check_url(
    value: Any, settings: Settings, lookup: NameLookup, errors: InputErrors
) -> str | None:
    problem, url = _url_problem(value)
    if problem is None:
        assert url is not None
        problem = await _host_problem(url, settings.allowed_networks, lookup)
    if problem is not None:
        errors.add("target_url", problem)
        return None
    return url


def _url_problem(value: Any) -> tuple[str | None, str | None]:
    """What is wrong with the URL's form, before any name is looked up."""
    if value is None or value == "":
        return "this field is required", None
    if not isinstance(value, str):
        return "must be a string", None
    url = value.strip()
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters", None
    if _UNSAFE_URL_CHARACTERS.search(url) or not _is_utf8(url):
        return "must not contain spaces or control characters", None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL: {exc}", None
    if parts.scheme.lower() not in {"http", "https"}:
        return "must be an http:// or https:// URL", None
    if not parts.hostname:
        return "must name a host", None
    if port == 0:
        return "port 0 cannot be connected to", None
    return None, url


async def _host_problem(
    url: str, allowed: Sequence[IPNetwork], lookup: NameLookup
) -> str | None:
    parts = urlsplit(url)
    host = URL(url).raw_host or ""
    literal = literal_address(host)
    if literal is not None and not is_canonical(host, literal):
        return f"the host {parts.hostname} is a numeric spelling of {literal}: write the address as {literal}"
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECS):
            await resolve_target(host, parts.port or 0, lookup, allowed)
    except BlockedAddress as exc:
        return f"{exc}, which is not allowed"
    except (OSError, TimeoutError, UnicodeError, ValueError):
        return f"the host {parts.hostname} does not resolve"
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def parse_json(text: str | bytes) -> Any:
    """Strict JSON: no NaN or Infinity, which no other JSON reader accepts."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range")
    return number


def _check_payload(
    raw: dict[str, Any],
    settings: Settings,
    errors: InputErrors,
    *,
    payload_is_text: bool,
) -> str | None:
    if "payload" not in raw:
        errors.add("payload", "this field is required")
        return None
    value = raw["payload"]
    if payload_is_text:
        if not isinstance(value, str) or not value.strip():
            errors.add("payload", "this field is required")
            return None
        text = value
        try:
            parse_json(text)
        except ValueError as exc:
            errors.add("payload", f"not valid JSON: {exc}")
            return None
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except RecursionError:
            errors.add("payload", "is nested too deeply")
            return None
    if not _is_utf8(text):
        errors.add("payload", "must be Unicode text (it holds a lone surrogate)")
        return None
    size = len(text.encode())
    if size > settings.max_payload_bytes:
        errors.add(
            "payload",
            f"is {size} bytes, more than the {settings.max_payload_bytes} allowed",
            status_code=413,
        )
        return None
    return text


def _check_attempts(value: Any, errors: InputErrors, *, from_form: bool) -> int | None:
    if value is None or value == "":
        return None
    # JSON gives a number; a form gives its digits. Nothing else is guessed:
    # "3" in JSON, 2.5 and true are refused rather than rounded or cast.
    if from_form and isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add("max_attempts", "must be a whole number")
        return None
    number = value
    if not 1 <= number <= 100:
        errors.add("max_attempts", "must be between 1 and 100")
        return None
    return number
