"""The pages in a real Chromium: log in, create, watch, cancel, read errors."""

from __future__ import annotations

import os
import uuid

import pytest
from playwright.async_api import Page, expect

from notify_worker import service

from ..helpers import ServiceFactory, TargetServer, eventually
from .steps import create_through_form, log_in

pytestmark = pytest.mark.browser


async def mark_page(page: Page) -> None:
    """A flag a reload would wipe: proves a change came without one."""
    await page.evaluate("window.notReloaded = true")


async def still_same_page(page: Page) -> bool:
    return await page.evaluate("window.notReloaded === true")


async def test_a_job_created_through_the_form_turns_success_without_a_reload(
    services: ServiceFactory, target: TargetServer, page: Page
) -> None:
    svc = await services.start()
    await log_in(page, svc)
    await create_through_form(page, target.url("/slow/2"), '{"event": "push"}')
    await mark_page(page)
    loaded = await page.get_attribute("#job", "data-status")
    assert loaded in {"pending", "running"}

    await expect(page.locator("#job-status")).to_have_text("success", timeout=20_000)
    assert await still_same_page(page)
    await expect(page.locator("#timeline")).to_contain_text("success")
    await expect(page.locator("#cancel-form")).to_have_count(0)
    await expect(page.locator("#job-finished")).to_contain_text("UTC")
    await expect(page.locator("#attempt-rows tr")).to_have_count(1)
    await expect(page.locator("#attempt-rows")).to_contain_text("200")


async def test_the_cancel_button_cancels_a_slow_job(
    services: ServiceFactory, target: TargetServer, page: Page
) -> None:
    svc = await services.start(timeout_secs=60)
    await log_in(page, svc)
    await create_through_form(page, target.url("/hang"), '{"slow": true}')
    await expect(page.locator("#job-status")).to_have_text("running")

    await page.click("#cancel-form button")

    await expect(page.locator("#job-status")).to_have_text("cancelled")
    await expect(page.locator("#cancel-form")).to_have_count(0)

    async def aborted() -> bool:
        return target.cancelled_requests == 1

    await eventually(aborted, timeout=10)


async def test_a_failure_shows_its_message(
    services: ServiceFactory, target: TargetServer, page: Page
) -> None:
    svc = await services.start()
    await log_in(page, svc)
    await create_through_form(page, target.url("/status/500"), "[1, 2, 3]")

    await expect(page.locator("#job-status")).to_have_text("failed")
    await expect(page.locator("#job-error-box")).to_be_visible()
    await expect(page.locator("#job-error")).to_contain_text("500")
    await expect(page.locator("#attempt-rows")).to_contain_text("500")


async def test_html_in_a_payload_or_an_error_shows_as_text(
    services: ServiceFactory, page: Page
) -> None:
    svc = await services.start(run_worker=False)
    payload = {"html": "<img src=x onerror=window.pwned=1>"}
    job = await svc.create("http://127.0.0.1:9/never", payload)
    await log_in(page, svc)
    await page.goto(f"{svc.base_url}/notify/{job['id']}")
    await expect(page.locator("pre.payload")).to_contain_text(payload["html"])

    # The error arrives live through the stream, then again from the server.
    message = "<script>window.pwned='error'</script><b>bold</b> & \\ \"quoted\""
    assert svc.runtime.engine is not None
    worker_id = uuid.uuid4()
    async with svc.runtime.engine.begin() as conn:
        await service.register_worker(conn, worker_id, "test", os.getpid(), None)
        await service.claim_jobs(conn, worker_id, 1)
    async with svc.runtime.engine.begin() as conn:
        await service.mark_failed(conn, uuid.UUID(job["id"]), worker_id, message)
    await expect(page.locator("#job-status")).to_have_text("failed")
    await expect(page.locator("#job-error")).to_have_text(message)

    await page.reload()
    await expect(page.locator("#job-error")).to_have_text(message)
    await expect(page.locator("#job-error b, #job-error script")).to_have_count(0)
    await expect(page.locator("pre.payload img")).to_have_count(0)
    assert await page.evaluate("window.pwned === undefined")


async def test_each_unfinished_row_of_the_list_is_live(
    services: ServiceFactory, page: Page
) -> None:
    svc = await services.start(run_worker=False)
    # More unfinished rows than a browser's six connections per host.
    jobs = [await svc.create("http://127.0.0.1:9/never") for _ in range(8)]
    await log_in(page, svc)
    await mark_page(page)
    rows = page.locator("tr[data-job-id]")
    await expect(rows).to_have_count(8)
    # Newest first.
    assert await rows.first.get_attribute("data-job-id") == jobs[-1]["id"]

    for job in (jobs[0], jobs[-1]):
        cancel = f"{svc.base_url}/notify/{job['id']}/cancel"
        async with svc.session.post(cancel, headers=svc.auth) as answer:
            assert answer.status == 200
    for job in (jobs[0], jobs[-1]):
        row = page.locator(f"tr[data-job-id='{job['id']}'] .status")
        await expect(row).to_have_text("cancelled")
    assert await still_same_page(page)

    # The page's one stream leaves a connection free: a link still opens.
    await page.click(f"a[href='/notify/{jobs[3]['id']}']")
    await expect(page.locator("#job-status")).to_have_text("pending")


async def test_the_api_docs_render_without_any_outside_host(
    services: ServiceFactory, page: Page
) -> None:
    svc = await services.start(run_worker=False)
    outside: list[str] = []
    page.on(
        "request",
        lambda request: (
            outside.append(request.url)
            if not request.url.startswith(svc.base_url)
            else None
        ),
    )
    await page.goto(f"{svc.base_url}/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text(
        "notify-worker", timeout=15_000
    )
    await expect(page.locator(".opblock-summary-path").first).to_be_visible()
    assert outside == []
