"""POST /notify/batch (all or none) and POST /notify/{id}/retry."""

import asyncio
from typing import Any

from sqlalchemy import URL

from ..helpers import RunningService, ServiceFactory, TargetServer, eventually
from .ops_helpers import count_jobs


async def post(svc: RunningService, path: str, body: Any = None) -> tuple[int, Any]:
    async with svc.session.post(
        f"{svc.base_url}{path}", json=body, headers=svc.auth
    ) as response:
        return response.status, await response.json()


async def _attempted(svc: RunningService, job_id: str) -> bool:
    job = await svc.job(job_id)
    return job["status"] == "pending" and job["attempts"] == 1


async def test_a_batch_creates_every_job_in_order(
    services: ServiceFactory, target: TargetServer
) -> None:
    svc = await services.start()
    entries = [
        {"target_url": target.url("/ok"), "payload": {"n": n}, "max_attempts": 2}
        for n in range(5)
    ]

    status, answer = await post(svc, "/notify/batch", entries)

    assert status == 201
    jobs = answer["jobs"]
    assert [job["payload"] for job in jobs] == [{"n": n} for n in range(5)]
    assert {job["max_attempts"] for job in jobs} == {2}
    for job in jobs:
        assert (await svc.wait_status(job["id"]))["status"] == "success"
    assert sorted(target.bodies()) == sorted(b'{"n":%d}' % n for n in range(5))


async def test_a_batch_with_one_bad_entry_creates_nothing_and_names_it(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    svc = await services.start()
    entries = [
        {"target_url": target.url("/ok"), "payload": {"n": 0}},
        {"target_url": "ftp://example.invalid/", "payload": {"n": 1}},
        {"target_url": target.url("/ok"), "payload": {"n": 2}},
        {"target_url": target.url("/ok")},
    ]

    status, answer = await post(svc, "/notify/batch", entries)

    assert status == 422
    named = {(item["loc"][1], item["loc"][2]) for item in answer["detail"]}
    assert named == {(1, "target_url"), (3, "payload")}
    assert await count_jobs(db_url) == 0
    assert target.received == []


async def test_a_batch_must_be_a_list_of_1_to_1000_objects(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    svc = await services.start()
    one = {"target_url": target.url("/ok"), "payload": {}}

    for body in ({"jobs": [one]}, [], [one] * 1001):
        status, answer = await post(svc, "/notify/batch", body)
        assert status == 422, answer
        assert answer["detail"][0]["loc"] == ["body", "body"]
    status, answer = await post(svc, "/notify/batch", [one, "not a job"])
    assert status == 422
    assert answer["detail"][0]["loc"] == ["body", 1, "entry"]
    assert await count_jobs(db_url) == 0


async def test_a_batch_of_1000_is_accepted(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    # No worker: this is about the one transaction, not 1000 deliveries.
    svc = await services.start(run_worker=False)
    entries = [
        {"target_url": target.url("/ok"), "payload": {"n": n}} for n in range(1000)
    ]

    status, answer = await post(svc, "/notify/batch", entries)

    assert status == 201
    assert len(answer["jobs"]) == 1000
    assert await count_jobs(db_url) == 1000


async def test_a_failed_job_is_retried_as_a_new_linked_job(
    services: ServiceFactory, target: TargetServer
) -> None:
    svc = await services.start()
    original = await svc.create(target.url("/status/500"), {"try": "again"})
    failed = await svc.wait_status(original["id"])
    assert failed["status"] == "failed"

    async with svc.session.post(
        f"{svc.base_url}/notify/{original['id']}/retry", headers=svc.auth
    ) as response:
        status, retry = response.status, await response.json()
        location = response.headers["Location"]

    assert status == 201
    assert location == f"/notify/{retry['id']}"
    assert retry["id"] != original["id"]
    assert retry["retry_of"] == original["id"]
    assert retry["status"] == "pending"
    assert (retry["target_url"], retry["payload"]) == (
        original["target_url"],
        original["payload"],
    )
    assert (await svc.wait_status(retry["id"]))["status"] == "failed"
    assert await svc.job(original["id"]) == failed
    assert target.bodies() == [b'{"try":"again"}'] * 2


async def test_a_cancelled_job_can_be_retried(
    services: ServiceFactory, target: TargetServer
) -> None:
    # No worker: the job is cancelled while pending, and so is its retry.
    svc = await services.start(run_worker=False)
    job = await svc.create(target.url("/ok"))
    status, _ = await post(svc, f"/notify/{job['id']}/cancel")
    assert status == 200

    status, retry = await post(svc, f"/notify/{job['id']}/retry")

    assert status == 201
    assert retry["retry_of"] == job["id"]


async def test_success_pending_and_other_owners_jobs_cannot_be_retried(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    svc = await services.start(retry_schedule="1h")
    done = await svc.create(target.url("/ok"))
    await svc.wait_status(done["id"])
    # Pending again after its first attempt, its retry an hour away.
    waiting = await svc.create(target.url("/status/503"), max_attempts=2)
    await eventually(lambda: _attempted(svc, waiting["id"]))

    for job in (done, waiting):
        status, answer = await post(svc, f"/notify/{job['id']}/retry")
        assert status == 409
        assert "only a failed or cancelled job" in answer["detail"]
    _other, token = await svc.new_owner("someone-else")
    async with svc.session.post(
        f"{svc.base_url}/notify/{done['id']}/retry",
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        assert response.status == 404
    assert await count_jobs(db_url) == 2


async def test_retries_with_one_idempotency_key_make_one_new_job(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    svc = await services.start()
    original = await svc.create(target.url("/status/400"))
    await svc.wait_status(original["id"])
    url = f"{svc.base_url}/notify/{original['id']}/retry"
    headers = {**svc.auth, "Idempotency-Key": "retry-once"}

    async def retry() -> tuple[int, str]:
        async with svc.session.post(url, headers=headers) as response:
            return response.status, (await response.json())["id"]

    answers = await asyncio.gather(*(retry() for _ in range(10)))

    assert {status for status, _ in answers} == {201}
    assert len({job_id for _, job_id in answers}) == 1
    assert await count_jobs(db_url) == 2
    # The same key on another job's retry is a different request: 422.
    other = await svc.create(target.url("/status/400"))
    await svc.wait_status(other["id"])
    async with svc.session.post(
        f"{svc.base_url}/notify/{other['id']}/retry", headers=headers
    ) as response:
        assert response.status == 422
