"""`notify-worker echo`: the README's target prints what a delivery carries."""

import asyncio
import subprocess
import sys

from ..helpers import ServiceFactory, eventually, free_port


async def test_the_echo_target_prints_a_delivery(
    services: ServiceFactory, tmp_path
) -> None:
    port = free_port()
    log = tmp_path / "echo.log"
    with log.open("w") as out:
        echo = subprocess.Popen(  # noqa: ASYNC220 (Popen returns at once)
            [sys.executable, "-m", "notify_worker", "echo", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await eventually(lambda: _says(log, "echo target on"), timeout=30)
        svc = await services.start()
        url = f"http://127.0.0.1:{port}/hooks"
        ok = await svc.create(url, {"event": "push"})
        refused = await svc.create(url + "?status=503")
        assert (await svc.wait_status(ok["id"]))["status"] == "success"
        failed = await svc.wait_status(refused["id"])
        assert failed["error_message"] == "HTTP 503 Service Unavailable"
        await eventually(lambda: _says(log, f"webhook-id: {ok['id']}"))
        assert '{"event":"push"}' in log.read_text()
    finally:
        echo.terminate()
        await asyncio.to_thread(echo.wait, 10)


async def _says(log, text: str) -> bool:
    return text in log.read_text()
