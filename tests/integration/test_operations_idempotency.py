"""Idempotency-Key on POST /notify: one job per owner and key for 24 hours."""

import asyncio
from typing import Any

import asyncpg
from sqlalchemy import URL

from notify_worker import database

from ..helpers import RunningService, ServiceFactory, TargetServer
from .ops_helpers import count_jobs


async def post(
    svc: RunningService, body: dict[str, Any], key: str, token: str | None = None
) -> tuple[int, Any, str | None]:
    """Status, JSON body and Location of a create with this key."""
    headers = {
        "Authorization": f"Bearer {token or svc.token}",
        "Idempotency-Key": key,
    }
    async with svc.session.post(
        f"{svc.base_url}/notify", json=body, headers=headers
    ) as response:
        return response.status, await response.json(), response.headers.get("Location")


async def test_the_same_key_twice_creates_one_job_and_answers_the_same(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    svc = await services.start()
    body = {"target_url": target.url("/ok"), "payload": {"order": 42}}

    first = await post(svc, body, "order-42")
    await svc.wait_status(first[1]["id"])
    again = await post(svc, body, "order-42")

    assert first[0] == again[0] == 201
    assert again[1] == first[1]
    assert again[2] == first[2] == f"/notify/{first[1]['id']}"
    assert await count_jobs(db_url) == 1
    assert len(target.received) == 1


async def test_the_same_key_with_a_different_body_is_422(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    svc = await services.start()
    body = {"target_url": target.url("/ok"), "payload": {"order": 42}}
    await post(svc, body, "order-42")

    status, answer, _ = await post(svc, {**body, "payload": {"order": 43}}, "order-42")

    assert status == 422
    assert answer["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert "different request" in answer["detail"][0]["msg"]
    assert await count_jobs(db_url) == 1


async def test_concurrent_requests_with_one_key_create_one_job(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    svc = await services.start()
    body = {"target_url": target.url("/ok"), "payload": {"burst": True}}

    answers = await asyncio.gather(*(post(svc, body, "burst") for _ in range(12)))

    assert {status for status, _, _ in answers} == {201}
    assert len({answer["id"] for _, answer, _ in answers}) == 1
    assert await count_jobs(db_url) == 1


async def test_keys_belong_to_their_owner(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    svc = await services.start()
    _other_id, other_token = await svc.new_owner("other-owner")
    body = {"target_url": target.url("/ok"), "payload": {}}

    mine = await post(svc, body, "shared-key")
    theirs = await post(svc, body, "shared-key", token=other_token)

    assert mine[1]["id"] != theirs[1]["id"]
    assert await count_jobs(db_url) == 2


async def test_a_key_older_than_24_hours_creates_a_new_job(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    svc = await services.start()
    body = {"target_url": target.url("/ok"), "payload": {"day": 1}}
    _, old, _ = await post(svc, body, "daily")
    conn = await asyncpg.connect(database.asyncpg_dsn(db_url))
    try:
        await conn.execute(
            "UPDATE notify_jobs SET created_at = now() - interval '24 hours 1 minute'"
        )
    finally:
        await conn.close()

    status, new, _ = await post(svc, {**body, "payload": {"day": 2}}, "daily")
    replay = await post(svc, {**body, "payload": {"day": 2}}, "daily")

    assert status == 201
    assert new["id"] != old["id"]
    assert replay[1]["id"] == new["id"]
    assert await count_jobs(db_url) == 2
    assert (await svc.job(old["id"]))["payload"] == {"day": 1}


async def test_an_unusable_key_is_422(
    services: ServiceFactory, target: TargetServer, db_url: URL
) -> None:
    svc = await services.start()
    body = {"target_url": target.url("/ok"), "payload": {}}

    status, answer, _ = await post(svc, body, "k" * 256)

    assert status == 422
    assert answer["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert await count_jobs(db_url) == 0
