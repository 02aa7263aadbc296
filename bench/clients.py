"""The client process: N streams on one job, every event's arrival time.

`python -m bench.clients HOST PORT TOKEN JOB_ID STREAMS CHANGES` prints
`ready` once every stream has its first event, then, when each stream has
seen CHANGES more, one JSON line: version -> the arrival times (monotonic
clock, which every process on the machine shares).

Each stream is a bare asyncio protocol that only looks for `id:` lines, so
the figures measure the web process, not a heavyweight client.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections import defaultdict

from .web import raise_fd_limit

EVENT_ID = re.compile(rb"(?m)^id: (\d+)\n")


class Stream(asyncio.Protocol):
    def __init__(self, request: bytes, run: Run) -> None:
        self.request = request
        self.run = run
        self.tail = b""
        self.seen = 0
        self.checked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = self.run.loop.time()
        if not self.checked:
            assert data.startswith(b"HTTP/1.1 200"), data[:200]
            self.checked = True
        buffer = self.tail + data
        end = 0
        for match in EVENT_ID.finditer(buffer):
            self.run.arrived(int(match[1]), now, self.seen)
            self.seen += 1
            end = match.end()
        # Keep a partial line for the next read, never an id already counted.
        self.tail = buffer[max(end, len(buffer) - 64) :]


class Run:
    def __init__(self, streams: int, changes: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.arrivals: dict[int, list[float]] = defaultdict(list)
        self.connected = 0
        self.finished = 0
        self.streams = streams
        self.changes = changes
        self.all_connected = asyncio.Event()
        self.all_finished = asyncio.Event()

    def arrived(self, version: int, at: float, seen_before: int) -> None:
        self.arrivals[version].append(at)
        if seen_before == 0:
            self.connected += 1
            if self.connected == self.streams:
                self.all_connected.set()
        if seen_before == self.changes:
            self.finished += 1
            if self.finished == self.streams:
                self.all_finished.set()


async def main_async(
    host: str, port: int, token: str, job_id: str, streams: int, changes: int
) -> None:
    raise_fd_limit(streams + 256)
    run = Run(streams, changes)
    request = (
        f"GET /notify/{job_id}/stream HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    transports = []
    for _ in range(streams):
        transport, _ = await run.loop.create_connection(
            lambda: Stream(request, run), host, port
        )
        transports.append(transport)
    await run.all_connected.wait()
    print("ready", flush=True)
    await run.all_finished.wait()
    for transport in transports:
        transport.close()
    print(json.dumps(run.arrivals), flush=True)


def main() -> None:
    host, port, token, job_id, streams, changes = sys.argv[1:7]
    asyncio.run(main_async(host, int(port), token, job_id, int(streams), int(changes)))


if __name__ == "__main__":
    main()
