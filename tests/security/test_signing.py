"""Signed deliveries, verified with `standardwebhooks`, which we did not write."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notify_worker import cli, service, signing
from notify_worker.models import signing_secrets

from .hostile import StaticLookup


async def _deliver(svc, target, payload) -> tuple[bytes, dict[str, str]]:
    before = len(target.received)
    job = await svc.create(target.url("/ok"), payload)
    assert (await svc.wait_status(job["id"]))["status"] == "success"
    [request] = target.received[before:]
    assert request.headers["webhook-id"] == job["id"]
    return request.body, request.headers


async def _new_secret(svc, *, rotate: bool) -> str:
    async with svc.runtime.engine.begin() as conn:
        return await service.create_signing_secret(
            conn, svc.user_id, rotate=rotate, grace_secs=signing.ROTATION_GRACE_SECS
        )


async def test_a_signed_delivery_verifies_and_rotation_signs_with_both(
    services, target
):
    svc = await services.start(allowed_networks="127.0.0.1/32", lookup=StaticLookup())
    body, headers = await _deliver(svc, target, {"unsigned": True})
    assert "webhook-signature" not in headers

    first = await _new_secret(svc, rotate=False)
    assert first.startswith("whsec_")
    body, headers = await _deliver(svc, target, {"text": "héllo 🚀"})
    assert Webhook(first).verify(body, headers) == {"text": "héllo 🚀"}
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(first).verify(body + b" ", headers)

    second = await _new_secret(svc, rotate=True)
    body, headers = await _deliver(svc, target, {"rotated": 1})
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(first).verify(body, headers) == {"rotated": 1}
    assert Webhook(second).verify(body, headers) == {"rotated": 1}

    # Once the grace period is over, only the new secret signs.
    async with svc.runtime.engine.begin() as conn:
        await conn.execute(
            update(signing_secrets)
            .where(signing_secrets.c.secret == first)
            .values(expires_at=func.now())
        )
    body, headers = await _deliver(svc, target, {"after": 1})
    assert Webhook(second).verify(body, headers) == {"after": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(first).verify(body, headers)


async def test_the_old_secret_lives_24_hours_after_a_rotation(engine):
    async with engine.begin() as conn:
        user, _ = await service.create_user(conn, "rotor")
        old = await service.create_signing_secret(
            conn, user.id, rotate=False, grace_secs=86400
        )
        with pytest.raises(service.SecretExists):
            await service.create_signing_secret(
                conn, user.id, rotate=False, grace_secs=86400
            )
        new = await service.create_signing_secret(
            conn, user.id, rotate=True, grace_secs=86400
        )
        assert await service.active_signing_secrets(conn, user.id) == [new, old]
        left = await conn.scalar(
            select(
                func.extract("epoch", signing_secrets.c.expires_at - func.now())
            ).where(signing_secrets.c.secret == old)
        )
    assert 86000 < float(left) <= 86400


async def test_the_command_line_creates_and_rotates_a_secret(db_url, capsys):
    settings = cli.load_settings(
        database_url=db_url.render_as_string(hide_password=False)
    )
    assert await cli.manage_user(settings, "create", "signer") == 0
    assert await cli.manage_user(settings, "secret", "signer") == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert first.startswith("whsec_")
    assert await cli.manage_user(settings, "secret", "signer") == 1
    assert "use --rotate" in capsys.readouterr().err
    assert await cli.manage_user(settings, "secret", "signer", rotate=True) == 0
    second = capsys.readouterr().out.strip().splitlines()[-1]
    assert second.startswith("whsec_") and second != first
