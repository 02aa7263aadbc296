"""Owners and credentials: tokens, sessions, CSRF, login throttling, leaks."""

from __future__ import annotations

import base64
import hmac
import logging
import re

import aiohttp
from sqlalchemy import select

from notify_worker import cli, service
from notify_worker.models import api_tokens
from notify_worker.service import owners
from notify_worker.web.auth import LoginThrottle

from .hostile import StaticLookup


async def test_tokens_are_32_random_bytes_stored_only_as_a_hash(engine, monkeypatch):
    async with engine.begin() as conn:
        user, token = await service.create_user(conn, "hashed")
        second = await service.create_token(conn, user.id)
        rows = (await conn.execute(select(api_tokens))).mappings().all()
    assert token != second
    raw = base64.urlsafe_b64decode(token.removeprefix("nw_") + "=")
    assert len(raw) >= 32
    stored = " ".join(repr(value) for row in rows for value in row.values())
    assert token not in stored and token.removeprefix("nw_") not in stored
    assert {bytes(row["token_hash"]) for row in rows} == {
        service.hash_token(token),
        service.hash_token(second),
    }

    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(owners.hmac, "compare_digest", spy)
    async with engine.connect() as conn:
        assert (await service.authenticate(conn, token))[0] == user
        assert await service.authenticate(conn, token + "x") is None
    assert compared == [(service.hash_token(token), service.hash_token(token))]


async def test_revoke_ends_every_token_and_session(services, db_url, capsys):
    svc = await services.start(lookup=StaticLookup())
    name = await _user_name(svc)
    cookie = await _log_in(svc, svc.token)
    settings = cli.load_settings(
        database_url=db_url.render_as_string(hide_password=False)
    )
    assert await cli.manage_user(settings, "revoke", name) == 0
    assert "revoked 1 token(s)" in capsys.readouterr().out
    async with svc.session.get(f"{svc.base_url}/notify", headers=svc.auth) as response:
        assert response.status == 401
    async with aiohttp.ClientSession(cookies={"notify_session": cookie}) as session:
        async with session.get(f"{svc.base_url}/notify") as response:
            assert response.status == 401


async def _user_name(svc) -> str:
    async with svc.runtime.engine.connect() as conn:
        from notify_worker.models import users

        return await conn.scalar(select(users.c.name).where(users.c.id == svc.user_id))


def _jar() -> aiohttp.CookieJar:
    # aiohttp keeps no cookies from a bare IP address unless told to.
    return aiohttp.CookieJar(unsafe=True)


async def _login_form(session, base_url) -> str:
    async with session.get(f"{base_url}/login") as response:
        page = await response.text()
    return re.search(r'name="login_token" value="([^"]+)"', page).group(1)


async def _post_login(
    svc, token: str, *, local: str = "127.0.0.1", headers: dict | None = None
) -> aiohttp.ClientResponse:
    """Load the login form, then send it, from the loopback address `local`."""
    connector = aiohttp.TCPConnector(local_addr=(local, 0))
    async with aiohttp.ClientSession(connector=connector, cookie_jar=_jar()) as session:
        login_token = await _login_form(session, svc.base_url)
        async with session.post(
            f"{svc.base_url}/login",
            data={"token": token, "login_token": login_token},
            headers=headers or {},
            allow_redirects=False,
        ) as response:
            return response


async def _log_in(svc, token: str) -> str:
    response = await _post_login(svc, token)
    assert response.status == 303
    header = response.headers.getall("Set-Cookie")
    [session_cookie] = [h for h in header if h.startswith("notify_session=")]
    attributes = session_cookie.lower()
    assert "httponly" in attributes and "samesite=lax" in attributes
    return session_cookie.split(";")[0].split("=", 1)[1]


async def test_session_cookies_are_httponly_lax_and_secure_behind_https(services):
    svc = await services.start(lookup=StaticLookup())
    await _log_in(svc, svc.token)
    response = await _post_login(svc, svc.token, headers={"X-Forwarded-Proto": "https"})
    [cookie] = [
        h
        for h in response.headers.getall("Set-Cookie")
        if h.startswith("notify_session=")
    ]
    assert "secure" in cookie.lower()


async def test_login_and_cookie_writes_need_their_csrf_token(services, target):
    svc = await services.start(allowed_networks="127.0.0.1/32", lookup=StaticLookup())
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{svc.base_url}/login", data={"token": svc.token}, allow_redirects=False
        ) as response:
            assert response.status == 403
    cookie = await _log_in(svc, svc.token)
    async with aiohttp.ClientSession(cookies={"notify_session": cookie}) as session:
        body = {"target_url": target.url("/ok"), "payload": {}}
        async with session.post(f"{svc.base_url}/notify", json=body) as response:
            assert response.status == 403
        async with session.post(
            f"{svc.base_url}/notify", data={**body, "payload": "{}"}
        ) as response:
            assert response.status == 403
        async with session.get(
            f"{svc.base_url}/notify", headers={"Accept": "text/html"}
        ) as response:
            page = await response.text()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        async with session.post(
            f"{svc.base_url}/notify", json=body, headers={"X-CSRF-Token": csrf}
        ) as response:
            assert response.status == 201


async def test_failed_logins_are_slowed_down_per_client(services):
    svc = await services.start(lookup=StaticLookup())

    async def attempt(token: str, local: str) -> aiohttp.ClientResponse:
        return await _post_login(svc, token, local=local)

    statuses = [(await attempt("nw_wrong", "127.0.0.3")).status for _ in range(6)]
    assert statuses[:3] == [401, 401, 401]
    blocked = await attempt(svc.token, "127.0.0.3")
    assert blocked.status == 429 and int(blocked.headers["Retry-After"]) >= 1
    # Another client is not held back by the first one's guesses.
    assert (await attempt(svc.token, "127.0.0.4")).status == 303


def test_the_login_throttle_doubles_its_delay_and_stays_bounded():
    now = [0.0]
    throttle = LoginThrottle(
        free_tries=2, base_delay=1, max_delay=8, max_clients=100, clock=lambda: now[0]
    )
    assert [throttle.begin("a") for _ in range(3)] == [0, 0, 0]
    assert throttle.begin("a") == 1
    now[0] += 1
    assert throttle.begin("a") == 0
    assert throttle.begin("a") == 2
    throttle.succeeded("a")
    assert throttle.begin("a") == 0
    for n in range(10_000):
        throttle.begin(f"client-{n}")
    assert len(throttle) == 100


async def test_credentials_in_target_urls_never_reach_logs_pages_or_errors(
    services, raw_target, caplog
):
    secrets = ["hunter2-password", "tok_9f8e7d6c5b4a", "whsec_notreallysecret"]

    async def refuse(reader, writer):
        writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")

    server = await raw_target(refuse)
    caplog.set_level(logging.DEBUG)
    svc = await services.start(allowed_networks="127.0.0.1/32", lookup=StaticLookup())
    urls = [
        f"http://alice:{secrets[0]}@127.0.0.1:{server.port}/hook?token={secrets[1]}",
        f"http://{secrets[2]}@127.0.0.1:1/hook",
        f"http://bob:{secrets[0]}@nowhere.example/hook?key={secrets[1]}",
    ]
    shown = []
    for url in urls[:2]:
        job = await svc.create(url)
        done = await svc.wait_status(job["id"])
        assert done["status"] == "failed"
        shown.append(done["error_message"])
        for path in (f"/notify/{job['id']}", "/notify"):
            async with svc.session.get(
                svc.base_url + path, headers={**svc.auth, "Accept": "text/html"}
            ) as response:
                shown.append(await response.text())
    async with svc.session.post(
        f"{svc.base_url}/notify",
        json={"target_url": urls[2], "payload": {}},
        headers=svc.auth,
    ) as response:
        assert response.status == 422
        shown.append(await response.text())
    async with svc.session.post(
        f"{svc.base_url}/notify",
        data={"target_url": urls[2], "payload": "{}"},
        headers={**svc.auth, "Accept": "text/html"},
    ) as response:
        shown.append(await response.text())
    shown += [record.getMessage() + repr(record.__dict__) for record in caplog.records]
    assert any("***" in text for text in shown)
    for text in shown:
        for secret in secrets:
            assert secret not in text
