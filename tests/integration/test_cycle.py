"""The whole cycle through the HTTP API: create, deliver, watch."""

import asyncio
import json

from sqlalchemy.ext.asyncio import AsyncEngine

from ..helpers import (
    RunningService,
    ServiceFactory,
    TargetServer,
    free_port,
    read_events,
)


async def test_a_job_reaches_its_target_and_the_stream_shows_each_step(
    services: ServiceFactory, target: TargetServer
) -> None:
    svc = await services.start()
    payload = {"event": "push", "text": "héllo ✓", "n": [1, 2.5, None]}
    created = await svc.create(target.url("/slow/0.5"), payload)
    assert created["status"] == "pending"

    status, events = await read_events(
        svc.session, f"{svc.base_url}/notify/{created['id']}/stream", svc.auth
    )

    assert status == 200
    statuses = [event.data["status"] for event in events]
    assert statuses[-1] == "success"
    assert statuses[0] in {"pending", "running"}
    assert statuses == sorted(statuses, key=["pending", "running", "success"].index)
    ids = [int(event.id) for event in events]
    assert ids == sorted(set(ids))
    assert len(target.received) == 1
    request = target.received[0]
    assert json.loads(request.body) == payload
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["webhook-id"] == created["id"]
    job = await svc.job(created["id"])
    assert job["status"] == "success"
    assert job["attempts"] == 1
    assert job["started_at"] and job["finished_at"]
    assert job["error_message"] is None


async def test_the_exact_payload_bytes_are_sent(
    services: ServiceFactory, target: TargetServer
) -> None:
    svc = await services.start()
    typed = '{ "b" : 2,\n  "a": "\\u00e9 é 🎉" }'
    async with svc.session.post(
        f"{svc.base_url}/notify",
        data={"target_url": target.url("/ok"), "payload": typed},
        headers=svc.auth,
        allow_redirects=False,
    ) as response:
        assert response.status == 303
        location = response.headers["Location"]
    job_id = location.rsplit("/", 1)[1]
    await svc.wait_status(job_id)
    assert target.bodies() == [typed.encode()]


async def test_a_500_fails_with_the_status_in_the_message(
    services: ServiceFactory, target: TargetServer
) -> None:
    svc = await services.start()
    created = await svc.create(target.url("/status/500"))
    job = await svc.wait_status(created["id"])
    assert job["status"] == "failed"
    assert job["error_message"] == "HTTP 500 Internal Server Error"


async def test_a_closed_port_fails_with_connection_refused(
    services: ServiceFactory,
) -> None:
    svc = await services.start()
    created = await svc.create(f"http://127.0.0.1:{free_port()}/hook")
    job = await svc.wait_status(created["id"])
    assert job["status"] == "failed"
    assert job["error_message"] == "connection refused"


async def test_a_target_past_the_deadline_times_out_and_frees_its_slot(
    services: ServiceFactory, target: TargetServer
) -> None:
    svc = await services.start(max_concurrent=1, timeout_secs=1)
    held = await svc.create(target.url("/hang"))
    after = await svc.create(target.url("/ok"))

    job = await svc.wait_status(held["id"])
    assert job["status"] == "failed"
    assert job["error_message"] == "timeout after 1s"
    # One permit only: the second job can run only if the first gave it back.
    assert (await svc.wait_status(after["id"]))["status"] == "success"
    assert target.cancelled_requests == 1


async def test_a_pending_job_cancelled_before_a_worker_runs_never_reaches_the_target(
    services: ServiceFactory, target: TargetServer
) -> None:
    web = await services.start(run_worker=False)
    created = await web.create(target.url("/ok"))
    async with web.session.post(
        f"{web.base_url}/notify/{created['id']}/cancel", headers=web.auth
    ) as response:
        assert response.status == 200
        assert (await response.json())["status"] == "cancelled"

    worker = await services.start()
    control = await worker.create(target.url("/ok"))
    await worker.wait_status(control["id"])

    assert target.job_ids() == [control["id"]]
    assert (await web.job(created["id"]))["status"] == "cancelled"


async def test_cancelling_a_finished_job_is_409_and_changes_nothing(
    services: ServiceFactory, target: TargetServer
) -> None:
    svc = await services.start()
    created = await svc.create(target.url("/ok"))
    await svc.wait_status(created["id"])
    async with svc.session.post(
        f"{svc.base_url}/notify/{created['id']}/cancel", headers=svc.auth
    ) as response:
        assert response.status == 409
    assert (await svc.job(created["id"]))["status"] == "success"


async def test_more_jobs_than_the_queue_holds_all_succeed(
    services: ServiceFactory, target: TargetServer, engine: AsyncEngine
) -> None:
    svc = await services.start(queue_size=2, max_concurrent=2, poll_interval_secs=0.3)
    created = await asyncio.gather(
        *(svc.create(target.url("/ok"), {"i": i}) for i in range(40))
    )

    finished = [await svc.wait_status(job["id"], timeout=60) for job in created]

    assert [job["status"] for job in finished] == ["success"] * 40
    assert sorted(target.job_ids()) == sorted(job["id"] for job in created)
    assert svc.runtime.worker is not None and svc.runtime.worker.dropped_wakeups > 0


async def test_the_job_list_is_newest_first_and_filters_by_status(
    services: ServiceFactory, target: TargetServer
) -> None:
    svc = await services.start()
    first = await svc.create(target.url("/ok"))
    await svc.wait_status(first["id"])
    second = await svc.create(target.url("/status/404"))
    await svc.wait_status(second["id"])

    async with svc.session.get(f"{svc.base_url}/notify", headers=svc.auth) as response:
        listed = await response.json()
    assert [job["id"] for job in listed["jobs"]] == [second["id"], first["id"]]

    async with svc.session.get(
        f"{svc.base_url}/notify?status=failed", headers=svc.auth
    ) as response:
        assert [job["id"] for job in (await response.json())["jobs"]] == [second["id"]]
    async with svc.session.get(
        f"{svc.base_url}/notify?status=done", headers=svc.auth
    ) as response:
        assert response.status == 422


async def _status_of(svc: RunningService, method: str, path: str, headers: dict) -> int:
    async with svc.session.request(
        method, f"{svc.base_url}{path}", headers=headers, allow_redirects=False
    ) as response:
        return response.status


async def test_another_owner_gets_404_on_the_job_its_stream_and_its_cancel(
    services: ServiceFactory, target: TargetServer
) -> None:
    svc = await services.start()
    created = await svc.create(target.url("/slow/2"))
    _other_id, other_token = await svc.new_owner("stranger")
    stranger = {"Authorization": f"Bearer {other_token}"}
    job_path = f"/notify/{created['id']}"

    assert await _status_of(svc, "GET", job_path, stranger) == 404
    assert await _status_of(svc, "GET", job_path + "/stream", stranger) == 404
    assert await _status_of(svc, "POST", job_path + "/cancel", stranger) == 404
    async with svc.session.get(f"{svc.base_url}/notify", headers=stranger) as response:
        assert (await response.json())["jobs"] == []
    assert (await svc.job(created["id"]))["status"] in {"pending", "running", "success"}


async def test_no_credentials_is_401_and_a_browser_is_sent_to_log_in(
    services: ServiceFactory, target: TargetServer
) -> None:
    svc = await services.start()
    created = await svc.create(target.url("/ok"))
    for method, path in [
        ("GET", "/notify"),
        ("POST", "/notify"),
        ("GET", f"/notify/{created['id']}"),
        ("GET", f"/notify/{created['id']}/stream"),
        ("POST", f"/notify/{created['id']}/cancel"),
    ]:
        assert await _status_of(svc, method, path, {}) == 401, path
    bad = {"Authorization": "Bearer nw_not-a-token"}
    assert await _status_of(svc, "GET", "/notify", bad) == 401
    async with svc.session.get(
        f"{svc.base_url}/notify", headers={"Accept": "text/html"}, allow_redirects=False
    ) as response:
        assert response.status == 303
        assert response.headers["Location"].startswith("/login?next=")


async def test_json_sent_as_a_form_is_told_its_content_type(
    services: ServiceFactory, target: TargetServer
) -> None:
    svc = await services.start(run_worker=False)
    body = json.dumps({"target_url": target.url("/ok"), "payload": {}})
    headers = {**svc.auth, "Content-Type": "application/x-www-form-urlencoded"}
    async with svc.session.post(
        f"{svc.base_url}/notify", data=body, headers=headers
    ) as response:
        assert response.status == 415
        assert "Content-Type: application/json" in await response.text()


async def test_accept_q_values_decide_between_page_and_json(
    services: ServiceFactory,
) -> None:
    svc = await services.start(run_worker=False)
    for accept, kind in [
        ("text/html;q=0.1, application/json", "application/json"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "text/html"),
        ("*/*", "application/json"),
    ]:
        async with svc.session.get(
            f"{svc.base_url}/notify", headers={**svc.auth, "Accept": accept}
        ) as response:
            assert response.content_type == kind, accept
    async with svc.session.head(f"{svc.base_url}/healthz") as response:
        assert response.status == 200
