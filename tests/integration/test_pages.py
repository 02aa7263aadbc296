"""The HTML pages over HTTP: login and its CSRF token, the list, the form."""

from __future__ import annotations

import re

import aiohttp

from ..helpers import RunningService, ServiceFactory

HTML = {"Accept": "text/html"}


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no hidden {name} field"
    return found.group(1)


async def logged_in(svc: RunningService) -> aiohttp.ClientSession:
    """A browser-like session: cookie jar, login form, session cookie."""
    jar = aiohttp.CookieJar(unsafe=True)
    session = aiohttp.ClientSession(cookie_jar=jar, headers=HTML)
    svc.extra_sessions.append(session)
    async with session.get(f"{svc.base_url}/login") as page:
        token = hidden(await page.text(), "login_token")
    form = {"token": svc.token, "login_token": token, "next": "/notify"}
    async with session.post(
        f"{svc.base_url}/login", data=form, allow_redirects=False
    ) as answer:
        assert answer.status == 303
    return session


async def test_login_without_its_csrf_token_is_refused(
    services: ServiceFactory,
) -> None:
    svc = await services.start(run_worker=False)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.get(f"{svc.base_url}/login") as page:
            token = hidden(await page.text(), "login_token")
        login = f"{svc.base_url}/login"
        async with s.post(login, data={"token": svc.token}) as answer:
            assert answer.status == 403
            assert "login form has expired" in await answer.text()
        wrong = {"token": svc.token, "login_token": "0" * 64}
        async with s.post(login, data=wrong) as answer:
            assert answer.status == 403
        # The token from another browser's login page does not fit this one.
        s.cookie_jar.clear()
        form = {"token": svc.token, "login_token": token}
        async with s.post(login, data=form) as answer:
            assert answer.status == 403


async def test_login_with_its_token_sets_a_session_cookie(
    services: ServiceFactory,
) -> None:
    svc = await services.start(run_worker=False)
    session = await logged_in(svc)
    async with session.get(f"{svc.base_url}/notify") as page:
        assert page.status == 200
        assert "Your jobs" in await page.text()
    cookies = {cookie.key: cookie for cookie in session.cookie_jar}
    assert cookies["notify_session"]["httponly"]


async def test_pages_forbid_inline_scripts(services: ServiceFactory) -> None:
    svc = await services.start(run_worker=False)
    session = await logged_in(svc)
    job = await svc.create("http://127.0.0.1:9/x")
    for path in ("/login", "/notify", f"/notify/{job['id']}"):
        async with session.get(svc.base_url + path) as page:
            policy = page.headers["Content-Security-Policy"]
            html = await page.text()
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "<script>" not in html and " on" + "click=" not in html


async def test_the_form_shows_each_error_beside_its_field_and_keeps_the_input(
    services: ServiceFactory,
) -> None:
    svc = await services.start(run_worker=False)
    session = await logged_in(svc)
    async with session.get(f"{svc.base_url}/notify") as page:
        csrf = hidden(await page.text(), "csrf_token")
    form = {"target_url": "ftp://<b>x</b>", "payload": "{not json", "csrf_token": csrf}
    async with session.post(f"{svc.base_url}/notify", data=form) as answer:
        assert answer.status == 422
        html = await answer.text()
    assert re.search(r'id="target_url-error">[^<]*http', html)
    assert re.search(r'id="payload-error">not valid JSON', html)
    assert 'aria-describedby="payload-error"' in html
    # What was typed comes back, escaped.
    assert 'value="ftp://&lt;b&gt;x&lt;/b&gt;"' in html
    assert "{not json</textarea>" in html
    async with svc.session.get(f"{svc.base_url}/notify", headers=svc.auth) as listing:
        assert (await listing.json())["jobs"] == []


async def test_the_list_is_newest_first_filtered_and_paginated(
    services: ServiceFactory,
) -> None:
    svc = await services.start(run_worker=False)
    session = await logged_in(svc)
    jobs = [await svc.create(f"http://127.0.0.1:9/{n}") for n in range(5)]
    cancel = f"{svc.base_url}/notify/{jobs[1]['id']}/cancel"
    async with svc.session.post(cancel, headers=svc.auth):
        pass

    def ids(html: str) -> list[str]:
        return re.findall(r'<tr data-job-id="([^"]+)"', html)

    async with session.get(f"{svc.base_url}/notify?per_page=2") as page:
        first = await page.text()
    assert ids(first) == [jobs[4]["id"], jobs[3]["id"]]
    assert 'href="?page=2&amp;per_page=2"' in first and "Newer" not in first
    async with session.get(f"{svc.base_url}/notify?per_page=2&page=3") as page:
        last = await page.text()
    assert ids(last) == [jobs[0]["id"]] and "Older" not in last
    async with session.get(f"{svc.base_url}/notify?status=cancelled") as page:
        cancelled = await page.text()
    assert ids(cancelled) == [jobs[1]["id"]]
    assert '<option value="cancelled" selected>' in cancelled


async def test_a_payload_holding_html_is_shown_as_text(
    services: ServiceFactory,
) -> None:
    svc = await services.start(run_worker=False)
    session = await logged_in(svc)
    job = await svc.create(
        "http://127.0.0.1:9/x", {"html": "<script>alert(1)</script>"}
    )
    async with session.get(f"{svc.base_url}/notify/{job['id']}") as page:
        html = await page.text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert" not in html


async def test_logging_out_needs_the_page_csrf_token(services: ServiceFactory) -> None:
    svc = await services.start(run_worker=False)
    session = await logged_in(svc)
    logout = f"{svc.base_url}/logout"
    async with session.post(logout, data={}, allow_redirects=False) as answer:
        assert answer.status == 403
    async with session.get(f"{svc.base_url}/notify") as page:
        csrf = hidden(await page.text(), "csrf_token")
    form = {"csrf_token": csrf}
    async with session.post(logout, data=form, allow_redirects=False) as answer:
        assert answer.status == 303
    async with session.get(f"{svc.base_url}/notify", allow_redirects=False) as page:
        assert page.status == 303
        assert page.headers["Location"].startswith("/login")


async def test_a_cookie_copied_before_logout_stops_working(
    services: ServiceFactory,
) -> None:
    svc = await services.start(run_worker=False)
    session = await logged_in(svc)
    copied = {cookie.key: cookie.value for cookie in session.cookie_jar}
    async with session.get(f"{svc.base_url}/notify") as page:
        csrf = hidden(await page.text(), "csrf_token")
    async with session.post(
        f"{svc.base_url}/logout", data={"csrf_token": csrf}, allow_redirects=False
    ) as answer:
        assert answer.status == 303

    async with aiohttp.ClientSession(cookies=copied) as thief:
        async with thief.get(f"{svc.base_url}/notify") as page:
            assert page.status == 401
    # The API token itself still works, and a new login makes a new session.
    async with svc.session.get(f"{svc.base_url}/notify", headers=svc.auth) as page:
        assert page.status == 200
    again = await logged_in(svc)
    async with again.get(f"{svc.base_url}/notify", allow_redirects=False) as page:
        assert page.status == 200
