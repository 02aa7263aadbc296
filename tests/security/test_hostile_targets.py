"""Hostile targets: drips, a gigabyte, resets, broken HTTP, hangs.

Each one costs its own attempt at most the deadline and one bounded
excerpt; a well-behaved job sent meanwhile still succeeds at once.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from .hostile import RawTarget, StaticLookup

GIB = 1024 * 1024 * 1024
HEAD_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"


def _start(services, **overrides):
    settings = {"allowed_networks": "127.0.0.1/32", "lookup": StaticLookup()}
    return services.start(**{**settings, **overrides})


async def _healthy_job_meanwhile(svc, target) -> None:
    job = await svc.create(target.url("/ok"))
    done = await svc.wait_status(job["id"], timeout=4)
    assert done["status"] == "success"


async def test_a_drip_fails_at_the_deadline_while_others_flow(
    services, raw_target, target
):
    async def drip(reader, writer):
        await server.send(writer, HEAD_OK + b"Content-Length: 1000\r\n\r\n")
        for _ in range(1000):
            await server.send(writer, b"x")
            await asyncio.sleep(2)

    server: RawTarget = await raw_target(drip)
    svc = await _start(services, timeout_secs=5, max_concurrent=4)
    job = await svc.create(server.url("/drip"))
    await _healthy_job_meanwhile(svc, target)
    done = await svc.wait_status(job["id"], timeout=15)
    assert done["status"] == "failed"
    assert done["error_message"] == "timeout after 5s"
    assert server.bytes_sent < 200


async def test_a_gigabyte_body_is_success_with_a_bounded_excerpt(
    services, raw_target, target
):
    chunk = b"G" * (256 * 1024)

    async def gigabyte(reader, writer):
        await server.send(writer, HEAD_OK + f"Content-Length: {GIB}\r\n\r\n".encode())
        for _ in range(GIB // len(chunk)):
            await server.send(writer, chunk)

    server: RawTarget = await raw_target(gigabyte)
    svc = await _start(services, response_excerpt_bytes=64 * 1024)
    job = await svc.create(server.url("/huge"))
    await _healthy_job_meanwhile(svc, target)
    done = await svc.wait_status(job["id"], timeout=15)
    assert done["status"] == "success"
    [attempt] = done["attempt_history"]
    assert attempt["response_excerpt"] == "G" * (64 * 1024)
    # The worker dropped the connection after the excerpt: the target could
    # push only what the socket buffers hold, nowhere near a gigabyte.
    await asyncio.sleep(0.5)
    assert server.bytes_sent < 64 * 1024 * 1024


async def test_a_reset_fails_clearly(services, raw_target):
    async def reset(reader, writer):
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await raw_target(reset)
    svc = await _start(services)
    job = await svc.create(server.url("/reset"))
    done = await svc.wait_status(job["id"])
    assert done["status"] == "failed"
    assert done["error_message"] in {
        "connection reset by the target",
        "the target closed the connection before answering",
    }


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 two hundred OK\r\n\r\n",
        b"\x00\xff SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * 200_000 + b"\r\n\r\n",
    ],
    ids=["broken-status-line", "not-http", "endless-header"],
)
async def test_broken_http_fails_clearly(services, raw_target, answer):
    async def broken(reader, writer):
        await server.send(writer, answer)

    server = await raw_target(broken)
    svc = await _start(services)
    job = await svc.create(server.url("/broken"))
    done = await svc.wait_status(job["id"])
    assert done["status"] == "failed"
    assert done["error_message"].startswith(
        "the target sent an invalid HTTP response"
    ), done["error_message"]


async def test_a_hang_after_the_headers_fails_at_the_deadline_while_others_flow(
    services, raw_target, target
):
    async def hang(reader, writer):
        await server.send(writer, HEAD_OK + b"Content-Length: 10\r\n\r\n")
        await asyncio.sleep(3600)

    server = await raw_target(hang)
    svc = await _start(services, timeout_secs=3, max_concurrent=4)
    hanging = [await svc.create(server.url(f"/hang/{n}")) for n in range(3)]
    await _healthy_job_meanwhile(svc, target)
    for job in hanging:
        done = await svc.wait_status(job["id"], timeout=15)
        assert done["status"] == "failed"
        assert done["error_message"] == "timeout after 3s"
