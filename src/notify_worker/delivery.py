"""One attempt over HTTP: the shared client session, address checks, outcome.

All deliveries of a process share one aiohttp ClientSession (a fresh client
per request costs a TLS handshake and a connection each time). The session's
resolver checks every address a target's name resolves to, at send time,
and the connection goes to the address it checked, so a name cannot
resolve to a public address at creation and a private one later.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from .config import IPNetwork

logger = logging.getLogger(__name__)

USER_AGENT = "notify-worker/0.1"


class BlockedAddress(Exception):
    """The target resolves to an address deliveries may not reach."""


def address_block_reason(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    allowed: Sequence[IPNetwork],
) -> str | None:
    """Why this address may not be a target, or None if it may."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            address = mapped
    if any(address in network for network in allowed):
        return None
    if address.is_global and not address.is_multicast:
        return None
    for label, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
    ):
        if flag:
            return label
    return "not globally routable"


class GuardedResolver(AbstractResolver):
    """Resolves off the event loop and drops every address not allowed."""

    def __init__(self, allowed: Sequence[IPNetwork]) -> None:
        self._allowed = tuple(allowed)
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            address = ipaddress.ip_address(result["host"])
            reason = address_block_reason(address, self._allowed)
            if reason is not None:
                # One blocked answer blocks the name: a target whose name
                # mixes public and private answers is not trusted.
                raise BlockedAddress(f"blocked address {address} ({reason})")
        return results

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class AttemptResult:
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    excerpt: bytes | None
    # The target's Retry-After header, as sent: the worker interprets it.
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Deliverer:
    def __init__(
        self,
        *,
        timeout_secs: float,
        allowed_networks: Sequence[IPNetwork] = (),
        excerpt_bytes: int = 64 * 1024,
        max_connections: int = 100,
    ) -> None:
        self.timeout_secs = timeout_secs
        self._allowed = tuple(allowed_networks)
        self._excerpt_bytes = excerpt_bytes
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self._allowed),
            limit=self._max_connections,
            ttl_dns_cache=None,
            use_dns_cache=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # The deadline is enforced around the whole attempt instead.
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(
        self, url: str, payload: bytes, headers: dict[str, str]
    ) -> AttemptResult:
        """POST once; every failure, the deadline included, becomes a result."""
        started_at = datetime.now(UTC)
        clock = time.monotonic()
        status_code: int | None = None
        excerpt: bytes | None = None
        retry_after: str | None = None
        try:
            async with asyncio.timeout(self.timeout_secs):
                status_code, excerpt, retry_after = await self._post(
                    url, payload, headers
                )
            error = _status_error(status_code)
        except TimeoutError:
            error = f"timeout after {_seconds(self.timeout_secs)}"
        except Exception as exc:  # every failure is the attempt's outcome
            error = describe_error(exc)
        duration_ms = int((time.monotonic() - clock) * 1000)
        return AttemptResult(
            started_at=started_at,
            finished_at=datetime.now(UTC),
            duration_ms=duration_ms,
            status_code=status_code,
            error=error,
            excerpt=excerpt,
            retry_after=retry_after,
        )

    async def _post(
        self, url: str, payload: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, str | None]:
        assert self._session is not None, "Deliverer.start() was not awaited"
        async with self._session.post(
            url,
            data=payload,
            headers={"Content-Type": "application/json", **headers},
            allow_redirects=False,
        ) as response:
            # Keep a bounded excerpt and stop reading: a target that sends a
            # gigabyte costs one buffer, and the connection is dropped.
            excerpt = await response.content.read(self._excerpt_bytes)
            if not response.content.at_eof():
                response.close()
            return response.status, excerpt, response.headers.get("Retry-After")


def _status_error(status: int) -> str | None:
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"redirect not followed ({status})"
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
    return f"HTTP {status} {phrase}"


def _seconds(value: float) -> str:
    return f"{value:g}s"


def describe_error(exc: BaseException) -> str:
    """A message a person understands for a failed request."""
    cause: Any = exc
    while cause is not None:
        if isinstance(cause, BlockedAddress):
            return str(cause)
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the target"
        if isinstance(cause, socket.gaierror):
            return f"name resolution failed: {cause.strerror or cause}"
        cause = cause.__cause__ or cause.__context__
        if cause is exc:
            break
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ConnectionRefusedError):
            return "connection refused"
        return f"cannot connect: {os_error.strerror or os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the target closed the connection before answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the target sent a broken response body"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"invalid HTTP response: {exc.message}"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid URL: {exc}"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection error: {exc.strerror or exc}"
    if isinstance(exc, aiohttp.ClientError):
        return f"request failed: {exc.__class__.__name__}: {exc}"
    logger.exception(
        "unexpected delivery error", extra={"action": "delivery_error_unexpected"}
    )
    return f"internal error: {exc.__class__.__name__}"
