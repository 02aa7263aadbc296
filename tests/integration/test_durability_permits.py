"""Every way an attempt can fail gives its permit back."""

import asyncio
import contextlib
import socket
import struct

from ..helpers import ServiceFactory, TargetServer, eventually, free_port
from .durability import Api, wait_statuses

CONCURRENCY = 4
HEALTHY_SECS = 1.0
TIMEOUT_SECS = 2


class ResettingTarget:
    """Accepts a connection, reads the request, and answers with a TCP reset."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._reset, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _reset(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read(1024)
        sock = writer.get_extra_info("socket")
        # Linger on with a zero timeout: close() sends RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


async def test_failed_attempts_of_every_kind_give_back_their_permits(
    services: ServiceFactory, target: TargetServer, db_url
) -> None:
    resetting = ResettingTarget()
    await resetting.start()
    svc = await services.start(max_concurrent=CONCURRENCY, timeout_secs=TIMEOUT_SECS)
    failing = {
        "refused": f"http://127.0.0.1:{free_port()}/",
        "reset": f"http://127.0.0.1:{resetting.port}/",
        "500": target.url("/status/500"),
        "timeout": target.url("/hang"),
    }
    try:
        async with Api(svc.base_url, svc.token) as api:
            kinds = {}
            for _round in range(2):
                for kind, url in failing.items():
                    kinds[await api.create(url)] = kind
            rows = await wait_statuses(db_url, kinds)

            healthy = await api.create_many(
                target.url(f"/slow/{HEALTHY_SECS}"), CONCURRENCY
            )
            # Every permit came back: all the healthy attempts are at the
            # target together, before the first of them is answered.
            await eventually(lambda: _healthy_arrivals(target, CONCURRENCY))
            arrivals = [r.at for r in target.received if r.path.startswith("/slow")]
            assert max(arrivals) - min(arrivals) < HEALTHY_SECS
            done = await wait_statuses(db_url, healthy)
    finally:
        await resetting.stop()

    messages = {kinds[job_id]: row["error_message"] for job_id, row in rows.items()}
    assert all(row["status"] == "failed" for row in rows.values())
    assert messages["refused"] == "connection refused"
    assert "reset" in messages["reset"] or "closed" in messages["reset"]
    assert "500" in messages["500"]
    assert messages["timeout"] == f"timeout after {TIMEOUT_SECS}s"
    assert all(row["status"] == "success" for row in done.values())
    assert svc.runtime.worker.in_flight == 0


async def _healthy_arrivals(target: TargetServer, count: int) -> bool:
    slow = [r for r in target.received if r.path.startswith("/slow")]
    return len(slow) >= count
