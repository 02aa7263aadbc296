"""Checking what an owner submits, before anything is stored.

Each problem is reported against its field with a message a person can
act on; a request with any problem stores nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from ..config import IPNetwork, Settings
from ..delivery import address_block_reason

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECS = 5.0


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
    raw: dict[str, Any], settings: Settings, *, payload_is_text: bool
) -> JobInput:
    errors = InputErrors()
    allowed = {"target_url", "payload", "max_attempts", "csrf_token"}
    for name in raw:
        if name not in allowed:
            errors.add(name, f"unknown field {name!r}")
    url = await _check_url(raw.get("target_url"), settings.allowed_networks, errors)
    payload = _check_payload(raw, settings, errors, payload_is_text=payload_is_text)
    max_attempts = _check_attempts(raw.get("max_attempts"), errors)
    if errors.errors:
        raise errors
    assert url is not None and payload is not None
    return JobInput(target_url=url, payload=payload, max_attempts=max_attempts)


async def _check_url(
    value: Any, allowed: Sequence[IPNetwork], errors: InputErrors
) -> str | None:
    if value is None or value == "":
        errors.add("target_url", "this field is required")
        return None
    if not isinstance(value, str):
        errors.add("target_url", "must be a string")
        return None
    url = value.strip()
    if len(url) > MAX_URL_LENGTH:
        errors.add("target_url", f"must be at most {MAX_URL_LENGTH} characters")
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        errors.add("target_url", f"not a valid URL: {exc}")
        return None
    if parts.scheme not in {"http", "https"}:
        errors.add("target_url", "must be an http:// or https:// URL")
        return None
    host = parts.hostname
    if not host:
        errors.add("target_url", "must name a host")
        return None
    reason = await _host_block_reason(host, port or 0, allowed)
    if reason is not None:
        errors.add("target_url", reason)
        return None
    return url


async def _host_block_reason(
    host: str, port: int, allowed: Sequence[IPNetwork]
) -> str | None:
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = await _resolve(host, port)
        if addresses is None:
            return f"the host {host!r} does not resolve"
    for address in addresses:
        reason = address_block_reason(address, allowed)
        if reason is not None:
            return f"the host resolves to a {reason} address ({address}), which is not allowed"
    return None


async def _resolve(
    host: str, port: int
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address] | None:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECS):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        return None
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


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
            json.loads(text)
        except ValueError as exc:
            errors.add("payload", f"not valid JSON: {exc}")
            return None
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    size = len(text.encode())
    if size > settings.max_payload_bytes:
        errors.add(
            "payload",
            f"is {size} bytes, more than the {settings.max_payload_bytes} allowed",
            status_code=413,
        )
        return None
    return text


def _check_attempts(value: Any, errors: InputErrors) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        errors.add("max_attempts", "must be a whole number")
        return None
    if isinstance(value, bool) or not 1 <= number <= 100:
        errors.add("max_attempts", "must be between 1 and 100")
        return None
    return number
