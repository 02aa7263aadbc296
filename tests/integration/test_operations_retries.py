"""Retries: the schedule, Retry-After, final answers, the attempt history."""

import asyncio
from datetime import datetime, timedelta

from ..helpers import (
    RunningService,
    ServiceFactory,
    TargetServer,
    eventually,
    free_port,
    iter_events,
)
from .scripted_target import ScriptedTarget

# Short enough for a test, long enough to see the job wait as pending.
TEST_SCHEDULE = "200ms,200ms,200ms"


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


async def first_retry_scheduled(svc: RunningService, job_id: str) -> dict:
    """The job once its first attempt is recorded and it waits as pending."""

    async def check() -> dict | None:
        job = await svc.job(job_id)
        waiting = job["status"] == "pending" and job["attempt_history"]
        return job if waiting else None

    return await eventually(check)


async def test_a_target_failing_twice_then_answering_ends_success_after_three(
    services: ServiceFactory, scripted: ScriptedTarget
) -> None:
    svc = await services.start(retry_schedule=TEST_SCHEDULE)
    url = scripted.script("flaky", 500, 503, 200)

    created = await svc.create(url, max_attempts=3)
    job = await svc.wait_status(created["id"])

    assert job["status"] == "success"
    assert job["attempts"] == 3
    assert job["error_message"] is None
    history = job["attempt_history"]
    assert [a["number"] for a in history] == [1, 2, 3]
    assert [a["response_status"] for a in history] == [500, 503, 200]
    assert history[0]["error"] == "HTTP 500 Internal Server Error"
    assert history[2]["error"] is None
    for attempt in history:
        assert parse(attempt["finished_at"]) >= parse(attempt["started_at"])
        assert attempt["duration_ms"] >= 0
    # Each retry waited its step of the schedule (200 ms, minus 20% jitter).
    first, second, third = scripted.arrivals["flaky"]
    assert second - first >= 0.16 and third - second >= 0.16


async def test_a_target_always_failing_ends_failed_after_three(
    services: ServiceFactory, scripted: ScriptedTarget
) -> None:
    svc = await services.start(retry_schedule=TEST_SCHEDULE)
    url = scripted.script("down", 502)

    created = await svc.create(url, max_attempts=3)
    job = await svc.wait_status(created["id"])

    assert job["status"] == "failed"
    assert job["attempts"] == 3
    assert job["error_message"] == "HTTP 502 Bad Gateway"
    assert len(job["attempt_history"]) == 3
    assert len(scripted.arrivals["down"]) == 3


async def test_the_last_attempt_decides_the_final_status(
    services: ServiceFactory, scripted: ScriptedTarget
) -> None:
    svc = await services.start(retry_schedule=TEST_SCHEDULE)
    url = scripted.script("worse", 503, 404)

    job = await svc.wait_status((await svc.create(url, max_attempts=5))["id"])

    assert job["status"] == "failed"
    assert job["attempts"] == 2
    assert job["error_message"] == "HTTP 404 Not Found"


async def test_a_400_ends_failed_after_one_attempt(
    services: ServiceFactory, target: TargetServer
) -> None:
    svc = await services.start(retry_schedule=TEST_SCHEDULE)
    created = await svc.create(target.url("/status/400"), max_attempts=3)
    job = await svc.wait_status(created["id"])

    assert job["status"] == "failed"
    assert job["attempts"] == 1
    assert job["error_message"] == "HTTP 400 Bad Request"
    assert len(target.received) == 1


async def test_a_redirect_is_final_at_once(
    services: ServiceFactory, scripted: ScriptedTarget
) -> None:
    svc = await services.start(retry_schedule=TEST_SCHEDULE)
    url = scripted.script("moved", (301, {"Location": "http://127.0.0.1:1/"}))
    job = await svc.wait_status((await svc.create(url, max_attempts=3))["id"])

    assert job["status"] == "failed"
    assert job["attempts"] == 1
    assert job["error_message"] == "redirect not followed (301)"


async def test_a_closed_port_is_retried(services: ServiceFactory) -> None:
    svc = await services.start(retry_schedule=TEST_SCHEDULE)
    created = await svc.create(f"http://127.0.0.1:{free_port()}/", max_attempts=2)
    job = await svc.wait_status(created["id"])

    assert job["status"] == "failed"
    assert job["attempts"] == 2
    assert job["error_message"] == "connection refused"


async def test_max_attempts_defaults_to_the_setting(
    services: ServiceFactory, scripted: ScriptedTarget
) -> None:
    svc = await services.start(retry_schedule=TEST_SCHEDULE, max_attempts=2)
    url = scripted.script("twice", 500, 200)

    created = await svc.create(url)
    assert created["max_attempts"] == 2
    job = await svc.wait_status(created["id"])
    assert (job["status"], job["attempts"]) == ("success", 2)


async def test_a_429_with_retry_after_waits_at_least_that_long(
    services: ServiceFactory, scripted: ScriptedTarget
) -> None:
    svc = await services.start(retry_schedule=TEST_SCHEDULE)
    url = scripted.script("busy", (429, {"Retry-After": "30"}))

    created = await svc.create(url, max_attempts=3)
    job = await first_retry_scheduled(svc, created["id"])

    assert job["attempts"] == 1
    assert job["error_message"] == "HTTP 429 Too Many Requests"
    answered = parse(job["attempt_history"][0]["finished_at"])
    next_run = parse(job["next_run_at"])
    assert next_run - answered >= timedelta(seconds=30)
    assert next_run - answered <= timedelta(seconds=3600 + 5)
    # No second attempt meanwhile: the schedule's 200 ms did not win.
    await asyncio.sleep(1.0)
    assert len(scripted.arrivals["busy"]) == 1


async def test_a_retry_after_beyond_the_cap_is_cut_to_the_cap(
    services: ServiceFactory, scripted: ScriptedTarget
) -> None:
    svc = await services.start(retry_schedule=TEST_SCHEDULE, retry_after_cap_secs=60)
    url = scripted.script("greedy", (503, {"Retry-After": "86400"}))

    created = await svc.create(url, max_attempts=2)
    job = await first_retry_scheduled(svc, created["id"])

    answered = parse(job["attempt_history"][0]["finished_at"])
    wait = parse(job["next_run_at"]) - answered
    assert timedelta(seconds=60) <= wait <= timedelta(seconds=62)


async def test_the_stream_shows_attempts_and_the_next_run_through_a_retry(
    services: ServiceFactory, scripted: ScriptedTarget
) -> None:
    svc = await services.start(retry_schedule="2s")
    url = scripted.script("once", 500, 200)
    created = await svc.create(url, max_attempts=2)

    seen = []
    as_json = []
    async with asyncio.timeout(20):
        async with svc.session.get(
            f"{svc.base_url}/notify/{created['id']}/stream", headers=svc.auth
        ) as response:
            async for event in iter_events(response):
                seen.append(event.data)
                if event.data["status"] == "pending" and event.data["attempts"]:
                    as_json.append(await svc.job(created["id"]))
    steps = [(e["status"], e["attempts"], e["max_attempts"]) for e in seen]

    assert steps[-1] == ("success", 2, 2)
    # The first attempt may be over before the stream connects; the retry
    # waits two seconds, so the stream sees it wait and run.
    assert ("running", 2, 2) in steps
    waiting = [e for e in seen if e["status"] == "pending" and e["attempts"] == 1]
    assert waiting, steps
    assert waiting[0]["error_message"] == "HTTP 500 Internal Server Error"
    assert all(e["next_run_at"] is None for e in seen if e["status"] != "pending")
    # The stream and the job JSON name the same next run, spelled alike.
    assert as_json[0]["next_run_at"] == waiting[0]["next_run_at"]
    answered = parse(as_json[0]["attempt_history"][0]["finished_at"])
    wait = parse(waiting[0]["next_run_at"]) - answered
    assert timedelta(seconds=1.6) <= wait <= timedelta(seconds=2.4)


async def test_the_attempt_excerpt_is_bounded(
    services: ServiceFactory, scripted: ScriptedTarget
) -> None:
    svc = await services.start(response_excerpt_bytes=1000)
    url = scripted.script("huge", (200, {}, b"x" * 500_000))

    job = await svc.wait_status((await svc.create(url))["id"])

    assert job["status"] == "success"
    assert job["attempt_history"][0]["response_excerpt"] == "x" * 1000
