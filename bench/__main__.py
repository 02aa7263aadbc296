"""Run the benchmarks and print their tables: `python -m bench` (`make bench`).

Figures, never assertions: a benchmark reports what it measured, side by side
with what it is compared against, and the README shows the latest tables.
"""

import asyncio
import platform
from datetime import UTC, datetime

from . import http_clients, throughput


def main() -> None:
    print(
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {platform.python_version()}"
    )
    print()
    print(http_clients.report(asyncio.run(http_clients.run())))
    print()
    print(asyncio.run(throughput.run()))


main()
