"""One attempt over HTTP: the shared client session, address checks, outcome.

All deliveries of a process share one aiohttp ClientSession (a fresh client
per request costs a TLS handshake and a connection each time). The session's
resolver checks every address a target's name resolves to, at send time,
and the connection goes to the address it checked, so a name cannot
resolve to a public address at creation and a private one later. aiohttp
never asks the resolver about an IP literal, so literals (and the numeric
spellings of IPv4) are checked before the request starts.

A hostile target gets one deadline for the whole attempt and one bounded
read of its body: dripping bytes, a huge body or a hang cost it the
attempt, never more than a slot until the deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from .addresses import IPAddress, address_block_reason, literal_address
from .config import IPNetwork

__all__ = [
    "AttemptResult",
    "BlockedAddress",
    "Deliverer",
    "GuardedResolver",
    "NameLookup",
    "address_block_reason",
    "describe_error",
    "redact_url",
    "resolve_target",
    "system_lookup",
]

logger = logging.getLogger(__name__)

USER_AGENT = "notify-worker/0.1"


class BlockedAddress(Exception):
    """The target resolves to an address deliveries may not reach."""


NameLookup = Callable[[str, int], Awaitable[list[IPAddress]]]


async def system_lookup(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for a name.

    The event loop runs getaddrinfo in its thread pool, so a slow DNS
    server holds a thread, never the loop.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # An IPv6 answer may carry a zone ("fe80::1%eth0"): the address is before it.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def check_addresses(
    host: str, addresses: Sequence[IPAddress], allowed: Sequence[IPNetwork]
) -> None:
    """Raise BlockedAddress unless every address of the host is allowed."""
    for address in addresses:
        reason = address_block_reason(address, allowed)
        if reason is not None:
            # One blocked answer blocks the name: a target whose name
            # mixes public and private answers is not trusted.
            shown = host if host == str(address) else f"{host} ({address})"
            raise BlockedAddress(f"blocked address {shown}: {reason}")


async def resolve_target(
    host: str, port: int, lookup: NameLookup, allowed: Sequence[IPNetwork]
) -> list[IPAddress]:
    """The checked addresses of a target host, literal or name."""
    literal = literal_address(host)
    addresses = [literal] if literal is not None else await lookup(host, port)
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"the host {host} has no address")
    check_addresses(host, addresses, allowed)
    return addresses


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver hook: it connects only to the addresses checked here."""

    def __init__(self, allowed: Sequence[IPNetwork], lookup: NameLookup) -> None:
        self._allowed = tuple(allowed)
        self._lookup = lookup

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await resolve_target(host, port, self._lookup, self._allowed)
        wanted = {socket.AF_INET: 4, socket.AF_INET6: 6}.get(family)
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET if address.version == 4 else socket.AF_INET6,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in addresses
            if wanted is None or address.version == wanted
        ]

    async def close(self) -> None:
        return None


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
        lookup: NameLookup = system_lookup,
    ) -> None:
        self.timeout_secs = timeout_secs
        self._allowed = tuple(allowed_networks)
        self._lookup = lookup
        self._excerpt_bytes = excerpt_bytes
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self._allowed, self._lookup),
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
            error = _scrub(describe_error(exc), url)
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
        self._check_literal(url)
        async with self._session.post(
            url,
            data=payload,
            headers={"Content-Type": "application/json", **headers},
            allow_redirects=False,
        ) as response:
            return (
                response.status,
                await self._read_excerpt(response),
                response.headers.get("Retry-After"),
            )

    def _check_literal(self, url: str) -> None:
        # aiohttp connects to an IP literal without asking the resolver.
        host = URL(url).raw_host or ""
        address = literal_address(host)
        if address is not None:
            check_addresses(host, [address], self._allowed)

    async def _read_excerpt(self, response: aiohttp.ClientResponse) -> bytes:
        """At most the excerpt size of the body; the rest is never read.

        Reading stops at the bound and the connection is dropped, so a
        target that sends a gigabyte costs one bounded buffer.
        """
        chunks: list[bytes] = []
        size = 0
        while size < self._excerpt_bytes:
            chunk = await response.content.read(self._excerpt_bytes - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if not response.content.at_eof():
            response.close()
        return b"".join(chunks)


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
        return f"the target sent an invalid HTTP response: {_first_line(exc.message)}"
    if isinstance(exc, aiohttp.InvalidURL):
        # The exception repeats the URL, which may hold credentials.
        return "invalid target URL"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection error: {exc.strerror or exc}"
    if isinstance(exc, aiohttp.ClientError):
        return f"request failed: {exc.__class__.__name__}: {exc}"
    logger.exception(
        "unexpected delivery error", extra={"action": "delivery_error_unexpected"}
    )
    return f"internal error: {exc.__class__.__name__}"


def _first_line(text: Any) -> str:
    return str(text).strip().splitlines()[0][:200] if str(text).strip() else "?"


def _url_secrets(url: str) -> list[str]:
    """The parts of a URL that may be credentials: password, query values."""
    try:
        parts = urlsplit(url)
        found = [parts.username or "", parts.password or ""]
    except ValueError:
        return []
    found += [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
    return [value for value in found if len(value) >= 3]


def _scrub(message: str, url: str) -> str:
    """The message with any credential of the URL masked."""
    for secret in sorted(_url_secrets(url), key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def redact_url(url: str) -> str:
    """The URL as pages and logs show it: no password, no query values.

    Owners put tokens in target URLs (`?token=...`, `user:secret@host`); the
    page, the logs and error messages show where a job goes without them.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(invalid URL)"
    if not (parts.username or parts.password or parts.query):
        return url
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if parts.username or parts.password:
        # A user name alone can be the token (https://TOKEN@host/).
        netloc = f"***@{netloc}"
    query = "&".join(
        f"{name}=***" if value else name
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return parts._replace(netloc=netloc, query=query, fragment="").geturl()
