"""The embedded PostgreSQL: `migrate`, `serve` and `user create` share it."""

import asyncio
import os
import subprocess
import sys

import aiohttp

from ..helpers import eventually, free_port


def _env(data_dir, port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env.update(NOTIFY_DATA_DIR=str(data_dir), NOTIFY_PORT=str(port))
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notify_worker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_user_create_works_while_serve_holds_the_embedded_database(
    tmp_path,
) -> None:
    port = free_port()
    env = _env(tmp_path / "data", port)
    migrated = await asyncio.to_thread(_run, ["migrate", "upgrade"], env)
    assert migrated.returncode == 0, migrated.stderr

    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(  # noqa: ASYNC220 (Popen returns at once)
        [sys.executable, "-m", "notify_worker", "serve"],
        env=env,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                assert serve.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    async with http.get(f"{base}/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(healthy, timeout=60, every=0.2)

            created = await asyncio.to_thread(_run, ["user", "create", "alice"], env)
            assert created.returncode == 0, created.stderr
            token = created.stdout.strip().splitlines()[-1]
            assert token.startswith("nw_") and len(token) > 40

            async with http.get(
                f"{base}/notify", headers={"Authorization": f"Bearer {token}"}
            ) as response:
                assert response.status == 200
                assert (await response.json())["jobs"] == []

            again = await asyncio.to_thread(_run, ["user", "create", "alice"], env)
            assert again.returncode == 1
            assert "already exists" in again.stderr
        # The server is still up after the command's process left.
        assert serve.poll() is None
    finally:
        serve.terminate()
        serve.wait(60)
        log.close()
    assert serve.returncode == 0
    assert "action=worker_stopped" in (tmp_path / "serve.log").read_text()
    # The last process out stopped the embedded server; the next command
    # starts it again and finds the data it left.
    assert not (tmp_path / "data" / "pgdata" / "postmaster.pid").exists()
    again = await asyncio.to_thread(_run, ["user", "token", "alice"], env)
    assert again.returncode == 0
    assert again.stdout.strip().splitlines()[-1].startswith("nw_")


def test_serve_refuses_a_database_that_is_not_migrated(tmp_path) -> None:
    env = _env(tmp_path / "fresh", free_port())
    result = _run(["serve"], env)
    assert result.returncode == 2
    assert "notify-worker migrate upgrade" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_setting_stops_start_up_naming_the_variable(tmp_path) -> None:
    env = _env(tmp_path / "bad", free_port())
    env["NOTIFY_MAX_CONCURRENT"] = "lots"
    result = _run(["serve"], env)
    assert result.returncode == 2
    assert "NOTIFY_MAX_CONCURRENT='lots'" in result.stderr
    assert "Traceback" not in result.stderr


def test_user_names_and_bad_revisions_get_one_line_errors(tmp_path) -> None:
    env = _env(tmp_path / "names", free_port())
    assert _run(["migrate", "upgrade"], env).returncode == 0
    for args, message in [
        (["user", "create", ""], "must not be empty"),
        (["user", "create", "x" * 101], "at most 100 characters"),
        (["migrate", "upgrade", "zzz"], "Can't locate revision"),
    ]:
        result = _run(args, env)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr


async def test_a_killed_process_does_not_keep_the_embedded_server_alive(
    tmp_path,
) -> None:
    env = _env(tmp_path / "killed", free_port())
    assert _run(["migrate", "upgrade"], env).returncode == 0
    serve = subprocess.Popen(  # noqa: ASYNC220 (Popen returns at once)
        [sys.executable, "-m", "notify_worker", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pidfile = tmp_path / "killed" / "pgdata" / "postmaster.pid"
    await eventually(lambda: _exists(pidfile), timeout=60)
    await asyncio.sleep(1)
    serve.kill()
    serve.wait(10)
    # The postmaster outlives a SIGKILLed process; the next command joins it,
    # forgets the dead process, and being the last one out, stops the server.
    result = await asyncio.to_thread(_run, ["user", "create", "after-kill"], env)
    assert result.returncode == 0, result.stderr
    assert not pidfile.exists()


async def _exists(path) -> bool:
    return path.exists()
