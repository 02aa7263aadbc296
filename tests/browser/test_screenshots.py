"""Screenshots of the list and job pages, at desktop and phone widths.

They land in a temporary directory, or in NOTIFY_SCREENSHOT_DIR when set:
`make screenshots` points it at docs/screenshots for the README.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from ..helpers import RunningService, ServiceFactory, TargetServer
from .steps import PHONE, log_in

pytestmark = pytest.mark.browser

PAYLOAD = {"event": "order.paid", "order": 1042, "total": "59.90", "currency": "EUR"}


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("NOTIFY_SCREENSHOT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def one_of_each_status(
    svc: RunningService, target: TargetServer
) -> dict[str, dict]:
    """Jobs in all five statuses; the worker runs one delivery at a time."""
    done = await svc.create(target.url("/ok"), PAYLOAD)
    await svc.wait_status(done["id"])
    failed = await svc.create(target.url("/status/503"), {"event": "invoice.sent"})
    await svc.wait_status(failed["id"])
    running = await svc.create(target.url("/hang"), {"event": "user.created"})
    await svc.wait_status(running["id"], {"running"})
    await svc.create(target.url("/ok"), {"event": "user.updated"})
    cancelled = await svc.create(target.url("/ok"), {"event": "user.deleted"})
    await cancel(svc, cancelled["id"])
    return {"failed": failed, "running": running}


async def cancel(svc: RunningService, job_id: str) -> None:
    url = f"{svc.base_url}/notify/{job_id}/cancel"
    async with svc.session.post(url, headers=svc.auth) as answer:
        assert answer.status == 200


async def shoot(page: Page, path: Path) -> None:
    image = await page.screenshot(path=str(path), full_page=True, animations="disabled")
    assert len(image) > 10_000


async def test_screenshots_of_the_list_and_job_pages(
    services: ServiceFactory,
    target: TargetServer,
    browser: Browser,
    context: BrowserContext,
    page: Page,
    shots: Path,
) -> None:
    svc = await services.start(max_concurrent=1, timeout_secs=60)
    jobs = await one_of_each_status(svc, target)
    await log_in(page, svc)
    await expect(page.locator("tr[data-job-id]")).to_have_count(5)
    await shoot(page, shots / "jobs-desktop.png")
    job_url = f"{svc.base_url}/notify/{jobs['failed']['id']}"
    await page.goto(job_url)
    await expect(page.locator("#job-error")).to_contain_text("503")
    await shoot(page, shots / "job-desktop.png")

    phone: BrowserContext = await browser.new_context(
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        storage_state=await context.storage_state(),
    )
    try:
        small = await phone.new_page()
        await small.goto(f"{svc.base_url}/notify")
        await expect(small.locator("tr[data-job-id]")).to_have_count(5)
        # Nothing wider than the screen: no sideways scrolling on a phone.
        width = await small.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]
        await shoot(small, shots / "jobs-phone.png")
        await small.goto(job_url)
        await expect(small.locator("#job-status")).to_have_text("failed")
        width = await small.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]
        await shoot(small, shots / "job-phone.png")
    finally:
        await phone.close()
    # Free the target's hanging request before the fixtures stop it.
    await cancel(svc, jobs["running"]["id"])
