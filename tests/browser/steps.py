"""What a person does on the pages, as steps the browser tests share."""

from __future__ import annotations

import re

from playwright.async_api import Page

from ..helpers import RunningService

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
JOB_PAGE = re.compile(r"/notify/[0-9a-f-]{36}$")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


async def log_in(page: Page, svc: RunningService) -> None:
    await page.goto(f"{svc.base_url}/notify")
    # Not logged in: the list sends the browser to the login page.
    await page.wait_for_url(re.compile(r"/login\?next="))
    await page.fill("#token", svc.token)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{svc.base_url}/notify")


async def create_through_form(page: Page, target_url: str, payload: str) -> None:
    await page.fill("#target_url", target_url)
    await page.fill("#payload", payload)
    await page.click("text=Send notification")
    await page.wait_for_url(JOB_PAGE)
