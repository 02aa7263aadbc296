"""`notify-worker send`: create a job through the HTTP API and follow it.

It is an API client like any other: a bearer token, POST /notify, then the
job's SSE stream until a terminal event. A dropped stream is resumed with
Last-Event-ID; a 204 on resume means the final event was already seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, TextIO

import aiohttp

TERMINAL = {"success", "failed", "cancelled"}
EXIT_SUCCESS = 0
EXIT_JOB_FAILED = 1
EXIT_REFUSED = 2
RECONNECTS = 5


class ClientError(Exception):
    """The service refused the request or could not be reached."""


async def send(
    server: str,
    token: str,
    target_url: str,
    payload: Any,
    *,
    follow: bool,
    max_attempts: int | None = None,
    idempotency_key: str | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Create the job; with `follow`, wait for its end. The exit code says how."""
    body: dict[str, Any] = {"target_url": target_url, "payload": payload}
    if max_attempts is not None:
        body["max_attempts"] = max_attempts
    headers = {"Authorization": f"Bearer {token}"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    base = server.rstrip("/")
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            job = await _create(http, base, body)
            print(f"job {job['id']} created", file=out, flush=True)
            if not follow:
                return EXIT_SUCCESS
            job = await _follow(http, base, job, StatusLine(out))
    except (ClientError, aiohttp.ClientError, TimeoutError) as exc:
        print(f"notify-worker: {_reason(exc)}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"job {job['id']} {final_words(job)}", file=out, flush=True)
    return EXIT_SUCCESS if job["status"] == "success" else EXIT_JOB_FAILED


def final_words(job: dict[str, Any]) -> str:
    attempts = f"after {job['attempts']} attempt(s)"
    if job.get("error_message"):
        return f"{job['status']} {attempts}: {job['error_message']}"
    return f"{job['status']} {attempts}"


async def _create(
    http: aiohttp.ClientSession, base: str, body: dict[str, Any]
) -> dict[str, Any]:
    async with http.post(f"{base}/notify", json=body) as response:
        if response.status != 201:
            answer = (await response.text())[:500]
            raise ClientError(f"the service answered {response.status}: {answer}")
        return await response.json()


async def _follow(
    http: aiohttp.ClientSession, base: str, job: dict[str, Any], line: StatusLine
) -> dict[str, Any]:
    """Read the stream to the terminal event, resuming it if it drops."""
    last_id: str | None = None
    for tries in range(RECONNECTS + 1):
        headers = {"Last-Event-ID": last_id} if last_id else {}
        # A dropped connection is resumed below, from the last event seen.
        with contextlib.suppress(
            aiohttp.ClientPayloadError, aiohttp.ClientConnectionError
        ):
            async with http.get(
                f"{base}/notify/{job['id']}/stream", headers=headers
            ) as response:
                if response.status == 204:
                    break
                if response.status != 200:
                    raise ClientError(f"the stream answered {response.status}")
                async for event_id, data in _events(response):
                    last_id = event_id or last_id
                    job = {**job, **data}
                    if job["status"] in TERMINAL:
                        line.end()
                        return job
                    line.show(job)
        await asyncio.sleep(min(0.5 * 2**tries, 5.0))
    line.end()
    # The final event was seen before a drop, or the stream kept failing:
    # the job's own JSON says how it ended.
    async with http.get(f"{base}/notify/{job['id']}") as response:
        return await response.json()


async def _events(
    response: aiohttp.ClientResponse,
) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    """The (id, data) of each event; keep-alive comments are skipped."""
    event_id: str | None = None
    data: list[str] = []
    async for raw in response.content:
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        if text == "":
            if data:
                yield event_id, json.loads("\n".join(data))
            event_id, data = None, []
        elif text.startswith("id:"):
            event_id = text[3:].strip()
        elif text.startswith("data:"):
            data.append(text[5:].strip())


class StatusLine:
    """One line rewritten in place on a terminal; a line per change otherwise."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._live = out.isatty()
        self._shown = False

    def show(self, job: dict[str, Any]) -> None:
        text = f"{job['status']:<9} attempt {job['attempts']}/{job['max_attempts']}"
        if job.get("next_run_at") and job["status"] == "pending" and job["attempts"]:
            text += f", next at {_clock(job['next_run_at'])}"
        if job.get("error_message"):
            text += f" (last error: {job['error_message']})"
        if self._live:
            self._out.write("\r\x1b[K" + text)
        else:
            self._out.write(text + "\n")
        self._out.flush()
        self._shown = True

    def end(self) -> None:
        if self._live and self._shown:
            self._out.write("\n")
            self._out.flush()
        self._shown = False


def _clock(moment: str) -> str:
    parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return parsed.astimezone(UTC).strftime("%H:%M:%S UTC")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot reach the service: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, TimeoutError):
        return "the service did not answer in time"
    return str(exc) or exc.__class__.__name__
