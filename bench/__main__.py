"""Run the benchmarks and print their tables: `python -m bench` (`make bench`).

Figures, never assertions: a benchmark reports what it measured, side by side
with what it is compared against, and the README shows the latest tables.
`python -m bench streams` (or `throughput`, `clients`) runs one of them.
"""

import asyncio
import platform
import sys
from datetime import UTC, datetime

from . import http_clients, streams, throughput


def main(which: str = "all") -> None:
    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    print(f"# {stamp}, {platform.machine()}, Python {platform.python_version()}")
    if which in {"all", "clients"}:
        print()
        print(http_clients.report(asyncio.run(http_clients.run())))
    if which in {"all", "throughput"}:
        print()
        print(asyncio.run(throughput.run()))
    if which in {"all", "streams"}:
        print()
        streams.main([])


main(sys.argv[1] if len(sys.argv) > 1 else "all")
