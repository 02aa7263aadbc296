"""Hostile input: each bad request gets its 4xx and stores nothing."""

from __future__ import annotations

import json

import aiohttp
import pytest
from sqlalchemy import func, select

from notify_worker.models import notify_jobs

from .hostile import StaticLookup


async def _job_count(svc) -> int:
    async with svc.runtime.engine.connect() as conn:
        return await conn.scalar(select(func.count()).select_from(notify_jobs))


async def _post(svc, **kwargs) -> tuple[int, str]:
    headers = {**svc.auth, **kwargs.pop("headers", {})}
    async with svc.session.post(
        f"{svc.base_url}/notify", headers=headers, **kwargs
    ) as response:
        return response.status, await response.text()


@pytest.fixture
async def svc(services, target):
    service = await services.start(
        allowed_networks="127.0.0.1/32", lookup=StaticLookup(), max_payload_bytes=4096
    )
    service.ok_url = target.url("/ok")
    return service


def _field_error(text: str, field: str) -> str:
    [error] = [e for e in json.loads(text)["detail"] if e["loc"] == ["body", field]]
    return error["msg"]


async def test_each_bad_json_request_gets_a_precise_4xx(svc):
    ok = svc.ok_url
    cases = [
        ({"payload": {}}, 422, "target_url", "this field is required"),
        ({"target_url": ok}, 422, "payload", "this field is required"),
        (
            {"target_url": ok, "payload": {}, "color": "red"},
            422,
            "color",
            "unknown field 'color'",
        ),
        (
            {"target_url": "javascript:alert(1)", "payload": {}},
            422,
            "target_url",
            "must be an http:// or https:// URL",
        ),
        (
            {"target_url": "ftp://127.0.0.1/x", "payload": {}},
            422,
            "target_url",
            "must be an http:// or https:// URL",
        ),
        (
            {"target_url": "http:///nohost", "payload": {}},
            422,
            "target_url",
            "must name a host",
        ),
        (
            {"target_url": "http://127.0.0.1:0/", "payload": {}},
            422,
            "target_url",
            "port 0 cannot be connected to",
        ),
        (
            {"target_url": ok, "payload": {}, "max_attempts": "3"},
            422,
            "max_attempts",
            "must be a whole number",
        ),
        (
            {"target_url": ok, "payload": {}, "max_attempts": 2.5},
            422,
            "max_attempts",
            "must be a whole number",
        ),
        (
            {"target_url": "http://127.0.0.1:99999/", "payload": {}},
            422,
            "target_url",
            "not a valid URL",
        ),
        (
            {"target_url": "http://127.0.0.1/a b", "payload": {}},
            422,
            "target_url",
            "must not contain spaces",
        ),
        (
            {"target_url": "http://127.0.0.1/\r\nX: y", "payload": {}},
            422,
            "target_url",
            "control characters",
        ),
        ({"target_url": 12, "payload": {}}, 422, "target_url", "must be a string"),
        (
            {"target_url": ok + "?" + "a" * 2048, "payload": {}},
            422,
            "target_url",
            "at most 2048 characters",
        ),
        (
            {"target_url": "http://nowhere.invalid/", "payload": {}},
            422,
            "target_url",
            "does not resolve",
        ),
        (
            {"target_url": ok, "payload": "x" * 5000},
            413,
            "payload",
            "more than the 4096 allowed",
        ),
        (
            {"target_url": ok, "payload": {}, "max_attempts": 0},
            422,
            "max_attempts",
            "between 1 and 100",
        ),
        (
            {"target_url": ok, "payload": {}, "max_attempts": "many"},
            422,
            "max_attempts",
            "whole number",
        ),
        ({"target_url": ok, "payload": "\ud800"}, 422, "payload", "lone surrogate"),
    ]
    for body, status, field, message in cases:
        code, text = await _post(
            svc, data=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        assert code == status, (body, text)
        assert message in _field_error(text, field), (body, text)
    assert await _job_count(svc) == 0


async def test_a_url_of_exactly_2048_characters_is_accepted(svc):
    url = svc.ok_url + "?q=" + "a" * (2048 - len(svc.ok_url) - 3)
    assert len(url) == 2048
    code, text = await _post(svc, json={"target_url": url, "payload": {}})
    assert code == 201, text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"target_url": "x", "payload": NaN}', "NaN is not JSON"),
        (b'{"target_url": "x", "payload": 1e999}', "out of range"),
        (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
        (b"\xff\xfe{", "not valid JSON"),
    ],
)
async def test_bad_json_bodies_are_422(svc, body, message):
    code, text = await _post(
        svc, data=body, headers={"Content-Type": "application/json"}
    )
    assert code == 422, text
    assert message in _field_error(text, "body")
    assert await _job_count(svc) == 0


async def test_an_oversized_body_is_refused_before_it_is_read(svc):
    limit = 4096 * 3 + 16 * 1024
    huge = b'{"payload": "' + b"x" * (limit + 10) + b'"}'
    code, text = await _post(
        svc, data=huge, headers={"Content-Type": "application/json"}
    )
    assert code == 413
    assert "larger than" in _field_error(text, "body")

    async def endless():
        # Chunked, so no Content-Length can announce it: the cap must
        # stop reading the stream itself.
        for _ in range(1000):
            yield b"x" * 65536

    code, _ = await _post(
        svc, data=endless(), headers={"Content-Type": "application/json"}
    )
    assert code == 413
    assert await _job_count(svc) == 0


async def test_oversized_forms_and_multipart_are_413(svc):
    limit = 4096 * 3 + 16 * 1024
    form = {"target_url": svc.ok_url, "payload": "x" * (limit + 1)}
    code, _ = await _post(svc, data=form)
    assert code == 413
    multipart = aiohttp.FormData()
    multipart.add_field("target_url", svc.ok_url)
    multipart.add_field("payload", "x" * (limit + 1))
    code, _ = await _post(svc, data=multipart)
    assert code == 413
    form = {"target_url": svc.ok_url, "payload": json.dumps("x" * 5000)}
    code, _ = await _post(svc, data=form)
    assert code == 413
    assert await _job_count(svc) == 0


async def test_thousands_of_form_fields_are_refused(svc):
    fields = "&".join(f"f{n}=v" for n in range(2000))
    code, text = await _post(
        svc,
        data=f"target_url={svc.ok_url}&payload=%7B%7D&{fields}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert code == 422
    assert "at most 20 fields" in text
    multipart = aiohttp.FormData()
    for n in range(3000):
        multipart.add_field(f"f{n}", "v")
    code, _ = await _post(svc, data=multipart)
    assert 400 <= code < 500
    assert await _job_count(svc) == 0


async def test_a_form_that_is_not_utf8_is_refused(svc):
    code, text = await _post(
        svc,
        data=b"target_url=http://127.0.0.1/&payload=%22%ff%22",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert code == 422
    assert "not UTF-8" in text
    assert await _job_count(svc) == 0


async def test_a_bad_form_answers_with_its_page_and_a_javascript_url_is_refused(svc):
    code, page = await _post(
        svc,
        data={"target_url": "javascript:alert(1)", "payload": "{}"},
        headers={"Accept": "text/html"},
    )
    assert code == 422
    assert "must be an http:// or https:// URL" in page
    assert await _job_count(svc) == 0


MIXED = "Grüße, 世界! Привет мир · مرحبا · שלום · नमस्ते · 🚀🎉👩‍👩‍👧 · e\u0301"


async def test_mixed_scripts_and_emoji_survive_json_and_form(svc, target):
    payload = {"message": MIXED, MIXED: [MIXED]}
    created = await svc.create(svc.ok_url, payload)
    form_text = json.dumps({"message": MIXED}, ensure_ascii=False, indent=1)
    async with svc.session.post(
        f"{svc.base_url}/notify",
        data={"target_url": svc.ok_url, "payload": form_text},
        headers=svc.auth,
        allow_redirects=False,
    ) as response:
        assert response.status == 303
        form_id = response.headers["Location"].rsplit("/", 1)[1]
    for job_id in (created["id"], form_id):
        assert (await svc.wait_status(job_id))["status"] == "success"
    bodies = {r.headers["webhook-id"]: r.body for r in target.received}
    # The JSON path stores the payload compact; the form path exactly as typed.
    assert json.loads(bodies[created["id"]].decode()) == payload
    assert bodies[form_id].decode() == form_text
    job = await svc.job(form_id)
    assert job["payload"] == {"message": MIXED}
    async with svc.session.get(
        f"{svc.base_url}/notify/{form_id}",
        headers={**svc.auth, "Accept": "text/html"},
    ) as response:
        page = await response.text()
    assert MIXED in page
